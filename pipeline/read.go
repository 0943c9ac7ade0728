package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/gptbatch/gptbatch/jsonl"
)

// maxDupReports is how many duplicate ids are named one by one.
const maxDupReports = 10

// read sends each input line to out. Once the run stops sending it reads
// on to the end of the input, so that every line gets its result, unless
// the stop leaves the rest unread (stdout gone, a second signal) or the
// input is a terminal. It stops at once when ctx is done. A failure to read
// stops the run: the lines read still get their results.
func (r *runner) read(ctx context.Context, in io.Reader, out chan<- *jsonl.Request) error {
	defer close(out)
	rd := jsonl.NewReader(in, r.cfg.Input)
	// Ids seen, to report duplicates, and for --resume to tell twins
	// apart (see jsonl.Done).
	seen := make(map[string]int32)
	dups := 0
	defer func() {
		if dups > maxDupReports {
			r.cfg.Log.Warn(fmt.Sprintf("%d more duplicate ids", dups-maxDupReports))
		}
	}()
	for {
		if why := r.stop.stopped(); why != nil && !r.cfg.DryRun && (why.unread || r.cfg.TerminalInput) {
			return nil
		}
		req, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			err = &Error{Code: ExitFailed, Err: fmt.Errorf("read input: %w", err)}
			if r.cfg.DryRun {
				return err
			}
			r.stop.halt(&stopped{typ: jsonl.ErrInterrupted, msg: "not sent: the input could not be read", err: err, unread: true})
			return nil
		}
		first, dup := seen[req.ID]
		if dup {
			if dups++; dups <= maxDupReports {
				r.cfg.Log.Warn(fmt.Sprintf("duplicate id %q on lines %d and %d", req.ID, first, req.Line))
			}
		} else {
			seen[req.ID] = int32(req.Line)
		}
		if req.Err == nil && r.cfg.Resumed.Skip(req.ID, req.Line, !dup) {
			r.stats.Skipped.Add(1)
			continue
		}
		r.stats.Lines.Add(1)
		select {
		case out <- req:
		case <-ctx.Done():
			return nil
		}
	}
}
