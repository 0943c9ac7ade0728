package pipeline

import (
	"context"

	"github.com/gptbatch/gptbatch/jsonl"
)

// done is a line's result on its way to the ordered writer: what the
// submitter and the collector send it.
type done struct {
	seq int32 // the line's place among the run's lines
	res *jsonl.Result
}

// What orderBatchResults holds of a line besides its result's place in
// its spool.
const (
	noResult = -1 // no result yet
	written  = -2 // its result is written
)

// orderBatchResults is the ordered writer of --via batch: it takes the
// results of the lines no batch answers (the submitter's, on unsent) and
// of those a batch answers (the collector's, on collected) and sends each
// to out in input order, or at once with --unordered. A result that comes
// before its turn (answers arrive hours apart, and batches end in any
// order) waits in a spool of its own on disk, in dir: the window it holds
// in memory is a place in the spool a line, not the results. It alone
// keeps which lines have their result: the first a line gets is its
// result. Once both inputs are closed no more results come: those still
// spooled are written in order. It closes out.
func (r *runner) orderBatchResults(ctx context.Context, dir string, unsent, collected <-chan []done, out chan<- []*jsonl.Result) error {
	defer close(out)
	var parked *spool // made when a result first waits
	defer func() {
		if parked != nil {
			parked.close()
		}
	}()
	var at []int64 // by line: where its result is spooled, noResult or written
	next := 0      // ordered: the line whose result is written next
	var block []*jsonl.Result
	// emit sends the results in block to out once there are n of them.
	emit := func(n int) error {
		if len(block) < max(n, 1) {
			return nil
		}
		err := send(ctx, out, block)
		block = nil
		return err
	}
	// write sends the spooled result of line seq, then the ones spooled
	// after it in turn.
	write := func(seq int) error {
		for ; seq < len(at) && at[seq] >= 0; seq++ {
			head, _, err := parked.read(at[seq], false)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			res, err := parseResult(head)
			if err != nil {
				return &Error{Code: ExitFailed, Err: err}
			}
			block = append(block, res)
			if err := emit(blockLen); err != nil {
				return err
			}
			at[seq] = written
			next = seq + 1
		}
		return nil
	}
	for unsent != nil || collected != nil {
		var got []done
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
		for _, d := range got {
			for len(at) <= int(d.seq) {
				at = append(at, noResult)
			}
			if at[d.seq] != noResult {
				continue // it has its result
			}
			if !r.cfg.Unordered && int(d.seq) != next {
				if parked == nil {
					var err error
					if parked, err = newSpool(dir, "results"); err != nil {
						return &Error{Code: ExitFailed, Err: err}
					}
				}
				off, err := parked.append(appendResult(nil, d.res), nil)
				if err != nil {
					return &Error{Code: ExitFailed, Err: err}
				}
				at[d.seq] = off
				continue
			}
			block = append(block, d.res)
			at[d.seq] = written
			if !r.cfg.Unordered {
				next = int(d.seq) + 1
				if err := write(next); err != nil {
					return err
				}
			}
		}
		if err := emit(1); err != nil {
			return err
		}
	}
	// What still waits follows a line that got no result: the run
	// failed, and what it has is written in order.
	for seq := range at {
		if at[seq] >= 0 {
			if err := write(seq); err != nil {
				return err
			}
		}
	}
	return emit(1)
}

// blockLen is the most results a block to emit holds: results spooled
// ahead of their turn are read back a block at a time.
const blockLen = 1024
