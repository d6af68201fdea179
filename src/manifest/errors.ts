// The one error class for input that does not describe a valid composefs tree:
// a manifest, a dump file or an image. It is an InvalidRequestError, so the
// broker answers org.mountgate.Error.InvalidRequest and the CLI exits with 3.
import { InvalidRequestError } from '../errors.js';

export class InvalidManifestError extends InvalidRequestError {
  /** Where the problem is: a JSON pointer ("/entries/3/path") or "line N" of a dump. */
  readonly pointer: string;
  /** The message without the location. */
  readonly detail: string;
  constructor(detail: string, pointer = '') {
    super(pointer === '' ? detail : `${pointer}: ${detail}`);
    this.name = 'InvalidManifestError';
    this.pointer = pointer;
    this.detail = detail;
  }
}
