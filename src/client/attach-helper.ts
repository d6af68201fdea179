// The helper that runs inside the caller's new user+mount namespace, with full
// capabilities there, and turns a list of steps into mounts before it becomes
// the command: attach a detached mount fd it inherited, bind a host
// directory, mount a new tmpfs or overlay, enter a new root, change directory,
// take a terminal. It is a Perl program (perl-base is Essential on Debian, and
// perl starts in a few milliseconds where Node takes tens): Node cannot enter
// a namespace itself, so the process that attaches must be a fresh one
// started in the namespace, and this one does nothing but the steps, in order.
// namespace.ts decides the steps; anything else that needs an fd attached in a
// namespace it made can use the same helper (`attachHelperArgv`).
//
// Steps are words on the command line, each op with a fixed number of words
// (`new` adds a count and that many options), then "--" and the command:
//   attach FD BASE TARGET WHAT MODE     move_mount the inherited FD to BASE+TARGET
//   host DIR BASE TARGET WHAT MODE      a recursive clone of the host's DIR there
//   new FSTYPE BASE TARGET WHAT MODE N KEY[=VALUE]...   fsopen/fsconfig/fsmount there
//   stubs FD BASE TARGET WHAT MODE N ENTRY...   the inherited FD there, then
//                                       replaced by a read-only overlay of it
//                                       whose top layer, a fresh tmpfs, holds
//                                       those ENTRYs it lacks: dir:PATH,
//                                       file:PATH (empty), link:PATH:TO, and
//                                       copy:PATH (a writable copy bound over
//                                       it, empty when the image has none)
//   root DIR                            chroot into DIR (and chdir /)
//   dir PATH MODE                       mkdir PATH (octal MODE) unless it is a directory, as the helper's own ids
//   readonly BASE TARGET                make the mount at BASE+TARGET and every mount below it read-only
//   symlink TO BASE TARGET              a symbolic link at BASE+TARGET pointing to TO
//   cwd DIR                             chdir
//   user SPEC                           become the image's user: NAME or UID, optionally
//                                       :GROUP or :GID, looked up in the (new) root's
//                                       /etc/passwd and /etc/group; NAME alone takes its group
//   tty                                 a new session whose controlling terminal is fd 0
// MODE says what to do when the mount point BASE+TARGET is missing: "make"
// creates it one level at a time, "file" the same with an empty file last (a
// mount point for one device or file), "have" skips the step. WHAT names the mount
// in messages ("the bind"), TARGET is the path as the command will see it.
// Every fd above 2 is closed before the command starts.

const script = String.raw`
use strict;
use warnings;
# The new mount API and close_range have the same numbers on every architecture.
my %NR = (open_tree => 428, move_mount => 429, fsopen => 430, fsconfig => 431, fsmount => 432, close_range => 436, mount_setattr => 442);
my ($AT_FDCWD, $MOVE_MOUNT_F_EMPTY_PATH, $OPEN_TREE_CLONE, $OPEN_TREE_CLOEXEC, $AT_RECURSIVE) = (-100, 4, 1, 0x80000, 0x8000);
my ($FSOPEN_CLOEXEC, $FSMOUNT_CLOEXEC, $FSCONFIG_SET_FLAG, $FSCONFIG_SET_STRING, $FSCONFIG_CMD_CREATE) = (1, 1, 0, 1, 6);
my $TIOCSCTTY = 0x540E;
# umount2's number differs: x86_64 has its own table, the newer architectures share the generic one.
use Config;
my $UMOUNT2 = $Config{archname} =~ /^x86_64/ ? 166 : $Config{archname} =~ /^(aarch64|riscv64|loongarch64)/ ? 39 : undef;
my $MNT_DETACH = 2;
my $MOUNT_ATTR_RDONLY = 1;

sub fail { my ($message, $code) = @_; print STDERR "mountgate: $message\n"; exit($code // 1); }
# Copies, so that syscall may take a pointer to each string; numbers stay numbers.
sub sys { my ($name, @args) = @_; return syscall($NR{$name}, @args); }
sub close_fd { my ($fd) = @_; sys('close_range', $fd, $fd, 0); }

sub path_of { my ($base, $target) = @_; return $target eq '/' ? $base : $base eq '/' ? $target : "$base$target"; }

sub mount_point {
  my ($base, $target, $what, $mode) = @_;
  my $path = path_of($base, $target);
  my $file = $mode eq 'file';
  return $path if $file ? -f $path : -d $path;
  fail("cannot mount $what at $target: it is not a " . ($file ? 'file' : 'directory')) if -e $path;
  return undef if $mode eq 'have';
  # One level at a time: a recursive mkdir would report EROFS as ENOENT.
  my $at = $base;
  my @names = grep { $_ ne '' } split m{/}, $target;
  for my $k (0 .. $#names) {
    my $name = $names[$k];
    $at = $at eq '/' ? "/$name" : "$at/$name";
    next if -e $at;
    next if $file && $k == $#names ? open(my $fh, '>>', $at) : mkdir $at;
    if ($!{EROFS} && $base ne '/') {
      fail("cannot mount $what at $target: the image has no directory $target and is read-only; choose a directory that exists in it (or one under /tmp), or add --writable");
    }
    fail("cannot create the mount point $target for $what: $!");
  }
  return $path;
}

# A new mount of TYPE (options KEY or KEY=VALUE), detached; ATTRS: mount attributes (MOUNT_ATTR_*).
sub fs_new {
  my ($type, $target, $attrs, @options) = @_;
  my $fs = sys('fsopen', $type, $FSOPEN_CLOEXEC);
  fail("cannot mount $type at $target: $!") if $fs < 0;
  for my $option (@options) {
    my ($key, $value) = split /=/, $option, 2;
    my $r = defined $value ? sys('fsconfig', $fs, $FSCONFIG_SET_STRING, $key, $value, 0) : sys('fsconfig', $fs, $FSCONFIG_SET_FLAG, $key, 0, 0);
    fail("cannot mount $type at $target: option $key: $!") if $r < 0;
  }
  sys('fsconfig', $fs, $FSCONFIG_CMD_CREATE, 0, 0, 0) == 0 or fail("cannot mount $type at $target: $!");
  my $mnt = sys('fsmount', $fs, $FSMOUNT_CLOEXEC, $attrs);
  fail("cannot mount $type at $target: $!") if $mnt < 0;
  close_fd($fs);
  return $mnt;
}

# Makes in TOP (a directory) each ENTRY that LOWER lacks (a copy: an empty
# file), and for each copy entry a file in COPIES (a directory) with LOWER's
# contents, owner and mode, named by its position in ENTRIES. Parent
# directories LOWER has given their owner and mode there (an overlay shows a
# directory with the attributes of its topmost layer). An entry below
# something in LOWER that is not a directory (a symlink) is left out. Paths
# inside LOWER are looked at with lstat only: LOWER's symlinks point into the
# image's own root, not ours.
sub make_stubs {
  my ($lower, $top, $copies, @entries) = @_;
  my @root = lstat($lower) or fail("cannot look at the image: $!");
  chown($root[4], $root[5], $top);
  chmod($root[2] & 07777, $top);
  ENTRY: for my $k (0 .. $#entries) {
    my ($kind, $path, $to) = split /:/, $entries[$k], 3;
    if ($kind eq 'copy' && lstat("$lower$path") && -f _) {
      my @st = lstat(_);
      open(my $in, '<', "$lower$path") or fail("cannot read $path in the image: $!");
      open(my $out, '>', "$copies/$k") or fail("cannot copy $path: $!");
      local $/;
      print $out scalar(<$in> // '');
      close($out) or fail("cannot copy $path: $!");
      chown($st[4], $st[5], "$copies/$k");
      chmod($st[2] & 07777, "$copies/$k");
      next;
    }
    next if lstat("$lower$path");
    my @names = grep { $_ ne '' } split m{/}, $path;
    my $leaf = pop @names;
    my $at = '';
    for my $name (@names) {
      $at .= "/$name";
      my @st = lstat("$lower$at");
      next ENTRY if @st && !-d _;
      next if -d "$top$at";
      mkdir("$top$at", 0755) or fail("cannot make $at for the image's stubs: $!");
      if (@st) {
        chown($st[4], $st[5], "$top$at");
        chmod($st[2] & 07777, "$top$at");
      }
    }
    my $made = $kind eq 'dir' ? mkdir("$top$path", 0755)
      : $kind eq 'link' ? symlink($to, "$top$path")
      : open(my $fh, '>', "$top$path");
    $made or fail("cannot make $path for the image's stubs: $!");
    if ($kind eq 'copy') {
      open(my $empty, '>', "$copies/$k") or fail("cannot make $path: $!");
      chown($root[4], $root[5], "$copies/$k");
    }
  }
}

sub attach {
  my ($fd, $path, $target, $what) = @_;
  sys('move_mount', $fd, '', $AT_FDCWD, $path, $MOVE_MOUNT_F_EMPTY_PATH) == 0 or fail("cannot attach $what at $target: $!");
  close_fd($fd);
}

my @argv = @ARGV;
while (@argv && $argv[0] ne '--') {
  my $op = shift @argv;
  if ($op eq 'attach') {
    my ($fd, $base, $target, $what, $mode) = splice @argv, 0, 5;
    my $path = mount_point($base, $target, $what, $mode) // next;
    attach(0 + $fd, $path, $target, $what);
  } elsif ($op eq 'host') {
    my ($dir, $base, $target, $what, $mode) = splice @argv, 0, 5;
    my $path = mount_point($base, $target, $what, $mode) // next;
    my $fd = sys('open_tree', $AT_FDCWD, $dir, $OPEN_TREE_CLONE | $OPEN_TREE_CLOEXEC | $AT_RECURSIVE);
    fail("cannot bind the host's $dir at $target: $!") if $fd < 0;
    attach($fd, $path, $target, $what);
  } elsif ($op eq 'new') {
    my ($type, $base, $target, $what, $mode, $count) = splice @argv, 0, 6;
    my @options = splice @argv, 0, $count;
    my $path = mount_point($base, $target, $what, $mode) // next;
    attach(fs_new($type, $target, 0, @options), $path, $target, $what);
  } elsif ($op eq 'stubs') {
    my ($fd, $base, $target, $what, $mode, $count) = splice @argv, 0, 6;
    my @entries = splice @argv, 0, $count;
    my $path = mount_point($base, $target, $what, $mode) // next;
    # An overlay's layers must be mounts of this namespace: attach the fd
    # first, build the overlay on it (which keeps a private clone of it), then
    # put the overlay in its place.
    attach(0 + $fd, $path, $target, $what);
    my $top = fs_new('tmpfs', $target, 0, 'mode=0755');
    my $copies = fs_new('tmpfs', $target, 0, 'mode=0700');
    make_stubs($path, "/proc/self/fd/$top", "/proc/self/fd/$copies", @entries);
    # Read-only: the overlay has no upper layer, and the mount is read-only too.
    my $overlay = fs_new('overlay', $target, $MOUNT_ATTR_RDONLY, "lowerdir=/proc/self/fd/$top:$path", 'userxattr');
    close_fd($top);
    defined $UMOUNT2 or fail("cannot detach a mount on $Config{archname}: umount2's number is not known here");
    syscall($UMOUNT2, $path, $MNT_DETACH) == 0 or fail("cannot replace $what at $target: $!");
    attach($overlay, $path, $target, $what);
    # The copies, writable, each bound over its path in the read-only tree.
    for my $k (0 .. $#entries) {
      my ($kind, $file) = split /:/, $entries[$k], 3;
      next unless $kind eq 'copy' && -e "/proc/self/fd/$copies/$k";
      my $bind = sys('open_tree', $AT_FDCWD, "/proc/self/fd/$copies/$k", $OPEN_TREE_CLONE | $OPEN_TREE_CLOEXEC);
      fail("cannot bind the copy of $file: $!") if $bind < 0;
      attach($bind, "$path$file", "$target$file", "the copy of $file");
    }
    close_fd($copies);
  } elsif ($op eq 'dir') {
    my ($path, $mode) = splice @argv, 0, 2;
    -d $path or mkdir($path, oct $mode) or fail("cannot create $path: $!");
  } elsif ($op eq 'readonly') {
    my ($base, $target) = splice @argv, 0, 2;
    my $attr = pack('QQQQ', $MOUNT_ATTR_RDONLY, 0, 0, 0);
    sys('mount_setattr', $AT_FDCWD, path_of($base, $target), $AT_RECURSIVE, $attr, length $attr) == 0 or fail("cannot make $target read-only: $!");
  } elsif ($op eq 'symlink') {
    my ($to, $base, $target) = splice @argv, 0, 3;
    symlink($to, path_of($base, $target)) or fail("cannot create the link $target: $!");
  } elsif ($op eq 'root') {
    my $dir = shift @argv;
    chroot($dir) && chdir('/') or fail("cannot enter the image's root: $!");
  } elsif ($op eq 'cwd') {
    my $dir = shift @argv;
    chdir($dir) or fail("cannot change to the directory $dir: $!");
  } elsif ($op eq 'user') {
    my $spec = shift @argv;
    my ($who, $group) = split /:/, $spec, 2;
    my ($uid, $gid);
    if ($who =~ /^\d+$/) {
      $uid = $who;
      my @pw = getpwuid($uid);
      $gid = @pw ? $pw[3] : $uid;
    } else {
      my @pw = getpwnam($who) or fail("the image's user $who is not in its /etc/passwd");
      ($uid, $gid) = @pw[2, 3];
    }
    if (defined $group) {
      if ($group =~ /^\d+$/) { $gid = $group; }
      else { my @gr = getgrnam($group) or fail("the image's group $group is not in its /etc/group"); $gid = $gr[2]; }
    }
    # Perl's own ids (setregid/setgroups, setreuid): no module to load from a root that is now the image's.
    $( = $gid;
    $) = "$gid $gid";
    fail("cannot become group $gid: $!") unless $( == $gid && (split ' ', $))[0] == $gid;
    $< = $> = $uid;
    fail("cannot become user $uid: $!") unless $< == $uid && $> == $uid;
    $ENV{HOME} = (getpwuid($uid))[7] // '/' unless defined $ENV{HOME};
  } elsif ($op eq 'tty') {
    require POSIX;
    require Fcntl;
    POSIX::setsid() or fail("cannot start a session on the terminal: $!");
    ioctl(STDIN, $TIOCSCTTY, 0) or fail("cannot take the terminal: $!");
    my $flags = fcntl(STDIN, Fcntl::F_GETFL(), 0);
    fcntl(STDIN, Fcntl::F_SETFL(), $flags & ~Fcntl::O_NONBLOCK()) if defined $flags;
  } else {
    fail("attach helper: unknown step $op", 2);
  }
}
shift @argv;
fail('no command to run', 2) unless @argv;
# The command gets standard input, output and error, and no other fd of ours.
sys('close_range', 3, 0xFFFFFFFF, 0);
{ no warnings 'exec'; exec { $argv[0] } @argv; }
fail("cannot run $argv[0]: $!", 127);
`;

/** What the helper does to make a mount point that is missing: create it, or skip the step. */
export type MissingMountPoint = 'make' | 'file' | 'have';

interface At {
  /** The directory TARGET is inside of ("/", or the new root being assembled). */
  base: string;
  /** The path as the command will see it. */
  target: string;
  /** The mount's name in messages: "the bind", "the image". */
  what: string;
  missing: MissingMountPoint;
}

export type AttachStep =
  | ({ op: 'attach'; fd: number } & At)
  | ({ op: 'host'; dir: string } & At)
  | ({ op: 'new'; fsType: string; options: Record<string, string | undefined> } & At)
  | ({ op: 'stubs'; fd: number; entries: Stub[] } & At)
  | { op: 'dir'; path: string; mode: number }
  | { op: 'readonly'; base: string; target: string }
  | { op: 'symlink'; to: string; base: string; target: string }
  | { op: 'root'; dir: string }
  | { op: 'cwd'; dir: string }
  | { op: 'user'; spec: string }
  | { op: 'tty' };

/** A path an image may lack that a program expects (podman: /etc/mtab, /etc/hosts, ...), made in a tmpfs over it. */
export type Stub = { kind: 'dir' | 'file' | 'copy'; path: string } | { kind: 'link'; path: string; to: string };

function stubWord(stub: Stub): string {
  return stub.kind === 'link' ? `link:${stub.path}:${stub.to}` : `${stub.kind}:${stub.path}`;
}

function words(step: AttachStep): string[] {
  switch (step.op) {
    case 'attach':
      return ['attach', String(step.fd), step.base, step.target, step.what, step.missing];
    case 'host':
      return ['host', step.dir, step.base, step.target, step.what, step.missing];
    case 'new': {
      const options = Object.entries(step.options).map(([k, v]) => (v === undefined ? k : `${k}=${v}`));
      return ['new', step.fsType, step.base, step.target, step.what, step.missing, String(options.length), ...options];
    }
    case 'stubs':
      return ['stubs', String(step.fd), step.base, step.target, step.what, step.missing, String(step.entries.length), ...step.entries.map(stubWord)];
    case 'dir':
      return ['dir', step.path, step.mode.toString(8)];
    case 'readonly':
      return ['readonly', step.base, step.target];
    case 'symlink':
      return ['symlink', step.to, step.base, step.target];
    case 'root':
    case 'cwd':
      return [step.op, step.dir];
    case 'user':
      return ['user', step.spec];
    case 'tty':
      return ['tty'];
  }
}

/** The helper's argv (program first): it performs `steps`, then execs `command` (looked up on PATH). */
export function attachHelperArgv(steps: AttachStep[], command: string[]): string[] {
  return ['perl', '-e', script, '--', ...steps.flatMap(words), '--', ...command];
}
