package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/gptbatch/gptbatch/jsonl"
)

// spooled is a line's result, spooled in the tracker's results spool at
// off: what the submitter and the collector send the ordered writer.
type spooled struct {
	seq int32 // the line's slot
	off int64
}

// What orderBatchResults holds of a slot besides its result's place in
// the spool.
const (
	noResult = -1 // no result yet
	written  = -2 // its result is written
)

// orderBatchResults is the ordered writer of --via batch: it takes the
// results of the lines no batch answers (the submitter's, on unsent) and
// of those a batch answers (the collector's, on collected), spooled on
// disk, and sends each to out in input order, or at once with
// --unordered. It alone keeps which lines have their result; the window
// it holds is a place in the spool a line, not the results. Once both
// inputs are closed no more results come: the lines still without one
// get an interrupted result that names their batch. It closes out.
func (r *runner) orderBatchResults(ctx context.Context, t *tracker, unsent, collected <-chan []spooled, out chan<- []*jsonl.Result) error {
	defer close(out)
	var at []int64 // by slot: where its result is spooled, noResult or written
	next := 0      // ordered: the slot whose result is written next
	for unsent != nil || collected != nil {
		var got []spooled
		var ok bool
		select {
		case got, ok = <-unsent:
			if !ok {
				unsent = nil
			}
		case got, ok = <-collected:
			if !ok {
				collected = nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, s := range got {
			for len(at) <= int(s.seq) {
				at = append(at, noResult)
			}
			if !r.cfg.Unordered {
				at[s.seq] = s.off
				continue
			}
			if err := r.writeSpooled(ctx, t, s.off, out); err != nil {
				return err
			}
			at[s.seq] = written
		}
		for !r.cfg.Unordered && next < len(at) && at[next] >= 0 {
			if err := r.writeSpooled(ctx, t, at[next], out); err != nil {
				return err
			}
			at[next] = written
			next++
		}
	}
	if r.cfg.Unordered {
		next = 0
	}
	running := map[int32]int{} // batches still running: their lines without a result
	for seq, n := int32(next), t.count(); seq < n; seq++ {
		off := int64(noResult)
		if int(seq) < len(at) {
			off = at[seq]
		}
		switch {
		case off == written:
		case off >= 0:
			if err := r.writeSpooled(ctx, t, off, out); err != nil {
				return err
			}
		default:
			res, batch, err := r.unfinishedResult(t, seq)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			if batch >= 0 {
				running[batch]++
			}
			if err := send(ctx, out, []*jsonl.Result{res}); err != nil {
				return err
			}
		}
	}
	if len(running) > 0 && r.stop.signal.Err() != nil {
		r.sayHowToCollect(t, running)
	}
	return nil
}

// writeSpooled sends the result spooled at off to out.
func (r *runner) writeSpooled(ctx context.Context, t *tracker, off int64, out chan<- []*jsonl.Result) error {
	head, _, err := t.results.read(off, false)
	if err != nil {
		return &Error{Code: ExitFailed, Err: err}
	}
	res, err := parseResult(head)
	if err != nil {
		return &Error{Code: ExitFailed, Err: err}
	}
	return send(ctx, out, []*jsonl.Result{res})
}

// unfinishedResult is the result of line seq, which has none once no more
// will come: its batch was not collected, or it was never in one (-1).
func (r *runner) unfinishedResult(t *tracker, seq int32) (*jsonl.Result, int32, error) {
	sl := t.slot(seq)
	rec, _, err := t.record(seq, false)
	if err != nil {
		return nil, -1, err
	}
	req := &jsonl.Request{ID: rec.ID, Line: rec.Line, Metadata: rec.Metadata}
	if sl.batch < 0 {
		why := r.stop.stopped()
		if why == nil {
			why = interrupted
		}
		return errorResult(req, why.typ, fmt.Sprintf("line %d: %s", rec.Line, why.msg), why.status), -1, nil
	}
	id := t.batch(sl.batch).id
	res := errorResult(req, jsonl.ErrInterrupted,
		fmt.Sprintf("line %d: not collected: batch %s is still running; run the same command again with --resume to collect it", rec.Line, id), 0)
	res.Attempts = int(sl.tries)
	res.BatchID = id
	return res, sl.batch, nil
}

// sayHowToCollect tells, after an interrupt, which batches still run and
// how to collect them; running counts their lines without a result.
func (r *runner) sayHowToCollect(t *tracker, running map[int32]int) {
	var ids []string
	lines := 0
	t.mu.Lock()
	for i, b := range t.batches {
		if n, ok := running[int32(i)]; ok {
			ids = append(ids, b.id)
			lines += n
		}
	}
	t.mu.Unlock()
	shown := ids
	if len(shown) > 5 {
		shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(ids)-5))
	}
	r.cfg.Log.Warn(fmt.Sprintf("%s in %s still running (%s): they are paid for and keep running, and are recorded in %s; "+
		"to collect them without submitting again, run the same command with --resume OUT (the file holding this run's results)",
		Count(lines, "line is", "lines are"), Count(len(ids), "batch", "batches"), strings.Join(shown, ", "), r.cfg.Batch.Journal))
}
