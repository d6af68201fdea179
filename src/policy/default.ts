// The policy in force when /etc/mountgate/policy.json does not exist: every
// local user with a subuid and a subgid range may bind directories they own
// and ask for explanations; nothing else.
import type { Policy } from '../schema/types.generated.js';

export const defaultPolicy: Policy = {
  version: 1,
  methods: {
    BindIdmapped: { users: ['*'], requireSubordinateIds: true },
    Explain: { users: ['*'], requireSubordinateIds: false },
  },
  limits: { concurrentRequests: 8, requestsPerMinute: 600 },
  deniedSources: ['/proc', '/sys', '/dev', '/run/mountgate', '/var/lib/mountgate', '/etc/mountgate'],
};

export const defaultLimits = { concurrentRequests: 8, requestsPerMinute: 600 } as const;
