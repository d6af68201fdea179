// The process that is a running toolbox container: PID 1 of its PID
// namespace, in its user, mount and UTS namespaces, exec'd by the attach
// helper once the container's mounts are assembled under ROOT. It makes ROOT
// the namespace's root (pivot_root, the host's mounts detached), sets the
// hostname, writes the user's passwd and group entries into the container's
// own layer, says its host pid on stdout, and then waits: a child of it blocks
// on an exclusive flock of the session lock, which every `enter` holds shared
// for as long as its shell runs, so the container stops (PID 1 exits and the
// kernel kills everything in it) when the last session ends, whatever ended
// it. Before it goes it removes the state directory's pid file, while still
// holding the lock, so a new `enter` that waited for the lock never sees a
// stale one. PID 1 also reaps every orphan of the container.
//
// Arguments: ROOT LOCK RUNDIR HOSTNAME USER UID GID GROUP HOME SHELL.

const script = String.raw`
use strict;
use warnings;
use POSIX ();
use Fcntl qw(:flock);

my ($root, $lock, $rundir, $hostname, $user, $uid, $gid, $group, $home, $shell) = @ARGV;
sub fail { print STDERR "mountgate: $_[0]\n"; exit 1; }

# pivot_root, umount2 and sethostname predate the unified numbering of new
# syscalls. (/proc/sys/kernel/hostname belongs to the host's root, whom a user
# namespace does not map: only the call sets a namespace's hostname.)
my %NR = (x86_64 => [155, 166, 170], aarch64 => [41, 39, 161]);
my $machine = (POSIX::uname())[4];
my $nr = $NR{$machine} or fail("the toolbox does not know the pivot_root call on $machine");
my $MNT_DETACH = 2;

# Everything that names a host path happens before the root changes.
my $hostpid = readlink('/proc/self') // fail("cannot read /proc/self: $!");
open(my $lk, '<', $lock) or fail("cannot open the session lock $lock: $!");
opendir(my $run, $rundir) or fail("cannot open the state directory $rundir: $!");
chdir($root) or fail("cannot enter $root: $!");
my ($new, $old, $flags) = ('.', '.', $MNT_DETACH);
syscall($nr->[0], $new, $old) == 0 or fail("cannot make the container's root the namespace's root: $!");
syscall($nr->[1], $old, $flags) == 0 or fail("cannot detach the host's mounts: $!");
chdir('/') or fail("cannot enter the new root: $!");

my $name = $hostname;
syscall($nr->[2], $name, length $name) == 0 or fail("cannot set the hostname to $hostname: $!");

# The user's own entries replace any of the same name or id; the file is
# replaced by a rename, so a symlink in the image is replaced, never followed.
sub account {
  my ($file, $name, $id, $line) = @_;
  my @lines;
  if (open(my $in, '<', $file)) {
    @lines = map { chomp; $_ } <$in>;
    close($in);
  }
  my @kept = grep { my @f = split /:/, $_, -1; !($f[0] eq $name || (defined $f[2] && $f[2] eq $id)) } @lines;
  return if @kept == @lines - 1 && grep { $_ eq $line } @lines;
  -d '/etc' or mkdir('/etc', 0755) or fail("cannot create /etc: $!");
  open(my $out, '>', "$file.mountgate") or fail("cannot write $file: $!");
  print $out map { "$_\n" } @kept, $line;
  close($out) or fail("cannot write $file: $!");
  chmod(0644, "$file.mountgate");
  rename("$file.mountgate", $file) or fail("cannot replace $file: $!");
}
account('/etc/passwd', $user, $uid, "$user:x:$uid:$gid:$user:$home:$shell");
account('/etc/group', $group, $gid, "$group:x:$gid:");

$| = 1;
print "$hostpid\n";
open(STDIN, '<', '/dev/null');
open(STDOUT, '>', '/dev/null');
open(STDERR, '>', '/dev/null');

my $waiter = fork() // exit 1;
if ($waiter == 0) {
  flock($lk, LOCK_EX) or POSIX::_exit(1);
  # Still locked (PID 1 holds the same open lock): no enter can look now.
  if (chdir($run)) {
    unlink('holder.pid');
    rmdir('mnt');
    my ($base) = $rundir =~ m{([^/]+)/*$};
    rmdir($base) if chdir('..');
  }
  POSIX::_exit(0);
}
while (1) {
  my $pid = wait();
  last if $pid == $waiter || $pid < 0;
}
exit 0;
`;

export interface HolderArgs {
  /** The assembled root, as a host path in the holder's mount namespace. */
  root: string;
  /** The session lock file (every enter holds it shared). */
  lock: string;
  /** The state directory under $XDG_RUNTIME_DIR. */
  runDir: string;
  hostname: string;
  user: string;
  uid: number;
  gid: number;
  group: string;
  home: string;
  shell: string;
}

/** The holder's argv (program first). */
export function holderArgv(a: HolderArgs): string[] {
  return ['perl', '-e', script, '--', a.root, a.lock, a.runDir, a.hostname, a.user, String(a.uid), String(a.gid), a.group, a.home, a.shell];
}
