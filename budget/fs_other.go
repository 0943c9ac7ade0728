//go:build !unix

package budget

import (
	"io/fs"
	"os"
)

// openSafe adds nothing where there is no O_NOFOLLOW.
const openSafe = 0

// owner is unknown where files have no Unix owner.
func owner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// chownLike does nothing where files have no Unix owner.
func chownLike(*os.File, fs.FileInfo) {}
