//go:build unix

package budget

import (
	"io/fs"
	"os"
	"syscall"
)

// openSafe: never through a symbolic link, nor blocking on a named pipe.
const openSafe = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// owner is the user and group that own fi's file.
func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// chownLike gives f the owner (as root) and group of fi where it can.
func chownLike(f *os.File, fi fs.FileInfo) {
	uid, gid, ok := owner(fi)
	if !ok {
		return
	}
	if f.Chown(uid, gid) != nil {
		_ = f.Chown(-1, gid)
	}
}
