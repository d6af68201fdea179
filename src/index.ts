// mountgate's library API, for programs that manage their own namespaces
// (a podman storage driver, a sandbox launcher):
//
//   import { connect } from 'mountgate';
//   const broker = await connect();
//   const { mountFd } = await broker.bindIdmapped(dirFd, {});
//   // attach with move_mount(mountFd, ...) inside a mount namespace you own
export { connect, closeFd, MountgateBroker } from './client/broker.js';
export type { BindResult, BrokerInfo, ConnectOptions, ExplainResult } from './client/broker.js';
export * from './errors.js';
export type { BindRequest, MountRequest, Policy, IdRange } from './schema/types.generated.js';
export { validate, parseAndValidate, formatIssues } from './schema/validate.js';
export { attachMount } from './client/attach.js';
export { sealedMemfd } from './sys/syscalls.js';
