// The process that is a running toolbox container: PID 1 of its PID
// namespace, in its user, mount and UTS namespaces, exec'd by the attach
// helper once the container's mounts are assembled under ROOT. It makes ROOT
// the namespace's root (pivot_root, the host's mounts detached), binds the
// host's resolv.conf and a hosts file naming the container over /etc's, sets
// the hostname, writes the user's passwd and group entries into the container's
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

# The new mount API has one numbering on every architecture.
my ($OPEN_TREE, $MOVE_MOUNT, $MOUNT_SETATTR) = (428, 429, 442);
my ($AT_FDCWD, $OPEN_TREE_CLONE, $OPEN_TREE_CLOEXEC, $MOVE_MOUNT_F_EMPTY_PATH, $MOUNT_ATTR_RDONLY, $AT_EMPTY_PATH) = (-100, 1, 0x80000, 4, 1, 0x1000);

# A detached bind of the file at PATH (as this namespace sees it now), read-only with RO.
sub file_bind {
  my ($path, $ro) = @_;
  my $fd = syscall($OPEN_TREE, $AT_FDCWD, $path, $OPEN_TREE_CLONE | $OPEN_TREE_CLOEXEC);
  fail("cannot bind $path: $!") if $fd < 0;
  if ($ro) {
    my ($attr, $empty) = (pack('QQQQ', $MOUNT_ATTR_RDONLY, 0, 0, 0), '');
    syscall($MOUNT_SETATTR, $fd, $empty, $AT_EMPTY_PATH, $attr, length $attr) == 0 or fail("cannot make the bind of $path read-only: $!");
  }
  return $fd;
}

# Everything that names a host path happens before the root changes.
my $hostpid = readlink('/proc/self') // fail("cannot read /proc/self: $!");
# The container shares the host's network: the host's resolv.conf (read-only),
# and a hosts file of the host's entries and the container's name, made in the
# namespace's own tmpfs (ROOT's parent), each bound over its path in the
# container once it is the root: the image is never written, the layer only
# when it lacks the path (an empty mount point).
my ($scratch) = $root =~ m{^(.*)/[^/]+/*$};
my @files;
push @files, ['/etc/resolv.conf', file_bind('/etc/resolv.conf', 1)] if -f '/etc/resolv.conf';
{
  my $hosts = '';
  if (open(my $in, '<', '/etc/hosts')) { local $/; $hosts = <$in> // ''; close($in); }
  $hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" if $hosts eq '';
  $hosts .= "\n" unless $hosts =~ /\n$/;
  open(my $out, '>', "$scratch/hosts") or fail("cannot write the container's hosts file: $!");
  print $out $hosts, "# the toolbox (mountgate)\n127.0.1.1\t$hostname\n";
  close($out) or fail("cannot write the container's hosts file: $!");
  chmod(0644, "$scratch/hosts");
  push @files, ['/etc/hosts', file_bind("$scratch/hosts", 0)];
}
open(my $lk, '<', $lock) or fail("cannot open the session lock $lock: $!");
opendir(my $run, $rundir) or fail("cannot open the state directory $rundir: $!");
chdir($root) or fail("cannot enter $root: $!");
my ($new, $old, $flags) = ('.', '.', $MNT_DETACH);
syscall($nr->[0], $new, $old) == 0 or fail("cannot make the container's root the namespace's root: $!");
syscall($nr->[1], $old, $flags) == 0 or fail("cannot detach the host's mounts: $!");
chdir('/') or fail("cannot enter the new root: $!");

# Each bound over its path: a file there is covered, a missing one gets an
# empty mount point in the layer; a symbolic link is left alone (its target,
# in the container's terms, may not exist).
for my $f (@files) {
  my ($path, $fd) = @$f;
  next if -l $path;
  if (!-e $path) {
    -d '/etc' or mkdir('/etc', 0755) or fail("cannot create /etc: $!");
    open(my $mp, '>>', $path) or fail("cannot make the mount point $path: $!");
    close($mp);
  }
  next unless -f $path;
  my $empty = '';
  syscall($MOVE_MOUNT, $fd, $empty, $AT_FDCWD, $path, $MOVE_MOUNT_F_EMPTY_PATH) == 0 or fail("cannot bind $path: $!");
  POSIX::close($fd);
}

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
