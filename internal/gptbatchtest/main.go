// Command gptbatchtest is gptbatch for the tests that run it as processes
// (several at once on one budget, kill -9, signals): main, with the seams a
// test sets through its environment. It is test support; gptbatch's own
// main reads no such variable.
//
// GPTBATCH_TEST_CLOCK_OFFSET (a duration) moves the process's clock, to
// play a host whose clock is off. GPTBATCH_TEST_FSIZE (bytes) limits the
// size of the files the process writes (RLIMIT_FSIZE, as `ulimit -f`
// sets it), to play a disk that fills up.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/gptbatch/gptbatch/internal/cli"
)

func main() {
	var seams cli.Seams
	if v := os.Getenv("GPTBATCH_TEST_CLOCK_OFFSET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gptbatchtest: GPTBATCH_TEST_CLOCK_OFFSET: %v\n", err)
			os.Exit(2)
		}
		seams.Clock = offsetClock{d}
	}
	if v := os.Getenv("GPTBATCH_TEST_FSIZE"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err == nil {
			err = limitFileSize(n)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "gptbatchtest: GPTBATCH_TEST_FSIZE: %v\n", err)
			os.Exit(2)
		}
	}
	ctx, abort := cli.Signals(os.Stderr)
	seams.Abort = abort
	os.Exit(cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, seams))
}

// offsetClock is the wall clock moved by d.
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time                         { return time.Now().Add(c.d) }
func (c offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
