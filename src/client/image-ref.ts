// Which of a user's images a reference names: a full id, a unique id prefix
// of at least 8 hex characters, or a unique name (an image may have several).
import { InvalidRequestError, NotFoundError } from '../errors.js';
import type { ImageListing } from './broker.js';

/** Every name the listing gives the image (a broker from before several names lists one, as name). */
export function listedNames(image: { name?: string; names?: string[] }): string[] {
  return image.names ?? (image.name !== undefined ? [image.name] : []);
}

/**
 * The image `ref` names. Found by a name, its `name` is that name (the
 * record an import kept for it is that name's) and `byName` is set; found
 * by id, its `name` is the one given last.
 */
export function resolveImageRef(images: ImageListing[], ref: string): ImageListing & { byName?: true } {
  const exact = images.find((i) => i.id === ref);
  if (exact) return exact;
  const byPrefix = /^[0-9a-f]{8,63}$/.test(ref) ? images.filter((i) => i.id.startsWith(ref)) : [];
  if (byPrefix.length === 1) return byPrefix[0]!;
  if (byPrefix.length > 1) throw new InvalidRequestError(`${ref} is the start of ${byPrefix.length} image ids; give more of the id`);
  const byName = images.filter((i) => listedNames(i).includes(ref));
  if (byName.length === 1) return { ...byName[0]!, name: ref, byName: true };
  if (byName.length > 1) throw new InvalidRequestError(`${byName.length} of your images are named ${ref}; give the id instead (mountgate image ls)`);
  const hint = /^[0-9a-f]{1,7}$/.test(ref) ? ' (an id prefix needs at least 8 characters)' : '';
  throw new NotFoundError(`you have no image ${ref}${hint}; see mountgate image ls`);
}
