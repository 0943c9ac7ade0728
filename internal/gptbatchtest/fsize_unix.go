//go:build unix

package main

import "syscall"

// limitFileSize limits the size of the files the process writes to n
// bytes, as `ulimit -f` does.
func limitFileSize(n uint64) error {
	return syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n})
}
