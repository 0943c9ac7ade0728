//go:build !unix

package main

import "errors"

// limitFileSize is not available here: no RLIMIT_FSIZE.
func limitFileSize(uint64) error {
	return errors.New("no file size limit on this system")
}
