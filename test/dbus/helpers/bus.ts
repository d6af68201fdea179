// Starts a private dbus-daemon (custom bus type, EXTERNAL auth, allow-all
// policy) for a test. The config and socket live in a mkdtemp dir (mode 0755,
// socket 0777 so that unprivileged test users can connect); stop() kills the
// daemon and removes the dir.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { join } from 'node:path';

export interface PrivateBus {
  address: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startBus (): Promise<PrivateBus> {
  const dir = mkdtempSync('/tmp/mountgate-dbus-');
  chmodSync(dir, 0o755);
  const socket = join(dir, 'bus');
  const config = join(dir, 'bus.conf');
  // The fd limits are raised above the system-bus defaults (64 queued fds per
  // connection) so that a burst of fd-carrying calls reaches the service
  // instead of being refused by the daemon with LimitsExceeded.
  writeFileSync(config, `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_incoming_unix_fds">4096</limit>
  <limit name="max_outgoing_unix_fds">4096</limit>
  <limit name="max_replies_per_connection">4096</limit>
</busconfig>
`);
  const proc: ChildProcess = spawn('dbus-daemon', [`--config-file=${config}`, '--print-address', '--nofork'], {
    stdio: ['ignore', 'pipe', 'inherit']
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    const onExit = (code: number | null) => reject(new Error(`dbus-daemon exited (${code}) before printing its address`));
    proc.once('exit', onExit);
    proc.once('error', reject);
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        proc.removeListener('exit', onExit);
        resolve(out.slice(0, nl).trim());
      }
    });
  });
  chmodSync(socket, 0o777);
  return {
    address,
    dir,
    async stop () {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  };
}
