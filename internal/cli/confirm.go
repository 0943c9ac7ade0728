package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gptbatch/gptbatch/pipeline"
)

// confirm shows the counted batch's estimate on tty and asks whether to
// send it: anything but y or yes sends nothing (exit 3).
func (r *runCmd) confirm(ctx context.Context, tty io.ReadWriter, cfg pipeline.Config) error {
	s := cfg.Stats
	lines := s.Lines.Load()
	// What the budget holds now, loaded afresh: its day counters are its
	// own day's, whose end day_ends_at holds (GPTBATCH_DAY_TZ), whatever
	// the local date is.
	if err := cfg.Gate.Load(ctx, r.seams.now()); err != nil {
		return err
	}
	fmt.Fprintf(tty, "gptbatch: %s\ngptbatch: %s\nSend this batch? [y/N] ",
		batchEstimate(s, cfg, lines, lines-s.Estimated.Load()-s.CacheFound.Load()), limitSources(cfg.Gate))
	answer := make(chan string, 1)
	go func() {
		// A read from a terminal cannot be called off: on a signal this
		// goroutine is left waiting, and ends with the process.
		l, _ := bufio.NewReader(tty).ReadString('\n')
		answer <- l
	}()
	select {
	case l := <-answer:
		switch strings.ToLower(strings.TrimSpace(l)) {
		case "y", "yes":
			return nil
		}
		return &pipeline.Error{Code: pipeline.ExitLimit, Err: errors.New("not confirmed: nothing sent")}
	case <-ctx.Done():
		fmt.Fprintln(tty)
		return &pipeline.Error{Code: pipeline.ExitInterrupted, Err: errors.New("interrupted before sending: nothing sent")}
	}
}
