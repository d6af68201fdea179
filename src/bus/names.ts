// The broker's bus names, shared by both ends.
export const busName = 'org.mountgate.Broker1';
export const objectPath = '/org/mountgate/Broker1';
export const interfaceName = 'org.mountgate.Broker1';
