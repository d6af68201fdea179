// The policy in force when /etc/mountgate/policy.json does not exist: every
// local user with a subuid and a subgid range may bind directories they own,
// keep and mount composefs images within the default quotas, and ask for
// explanations; nothing else.
import type { Policy } from '../schema/types.generated.js';

const withSubids = { users: ['*'], requireSubordinateIds: true };

export const defaultPolicy: Policy = {
  version: 1,
  methods: {
    BindIdmapped: withSubids,
    AddImage: withSubids,
    PutObjects: withSubids,
    ProveObjects: withSubids,
    MountImage: withSubids,
    ListImages: withSubids,
    RemoveImage: withSubids,
    Explain: { users: ['*'], requireSubordinateIds: false },
  },
  limits: { concurrentRequests: 8, requestsPerMinute: 600 },
  deniedSources: ['/proc', '/sys', '/dev', '/run/mountgate', '/var/lib/mountgate', '/etc/mountgate'],
};

export const defaultLimits = { concurrentRequests: 8, requestsPerMinute: 600 } as const;

export const defaultImageLimits = { maxImagesPerUser: 64, maxBytesPerUser: 10 * 2 ** 30, maxEntriesPerImage: 2_000_000, maxManifestBytes: 256 * 2 ** 20 } as const;
