package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/gptbatch/gptbatch/internal/batchapi"
	"github.com/gptbatch/gptbatch/internal/retry"
)

// pollBatches polls every batch handed to it on in until it ends, and
// hands it on to out. A batch is polled about a second after it is
// submitted, so that small batches come back fast, then less and less
// often while nothing changes, up to --batch's MaxPoll (a minute), and
// never more than once a second. A poll that fails for a reason worth a
// retry (5xx, 429, the network) is tried again later, never fatal. On a
// signal it stops: the batches run on, and --resume collects them. It
// closes out.
func (r *runner) pollBatches(ctx context.Context, api *batchapi.Client, in <-chan *tbatch, out chan<- *tbatch) error {
	defer close(out)
	var active, ended []*tbatch
	first := r.cfg.Batch.poll()
	for {
		if r.stop.signal.Err() != nil {
			return nil
		}
		if in == nil && len(active) == 0 && len(ended) == 0 {
			return nil
		}
		now := r.cfg.Clock.Now()
		kept := active[:0]
		for _, b := range active {
			if b.next.After(now) || r.stop.signal.Err() != nil {
				kept = append(kept, b)
				continue
			}
			if r.pollOnce(ctx, api, b) {
				ended = append(ended, b)
			} else {
				kept = append(kept, b)
			}
		}
		active = kept
		var timer <-chan time.Time
		if len(active) > 0 {
			next := active[0].next
			for _, b := range active[1:] {
				if b.next.Before(next) {
					next = b.next
				}
			}
			timer = r.cfg.Clock.After(next.Sub(r.cfg.Clock.Now()))
		}
		var outC chan<- *tbatch
		var head *tbatch
		if len(ended) > 0 {
			outC, head = out, ended[0]
		}
		select {
		case b, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			b.interval = first
			b.next = r.cfg.Clock.Now().Add(first)
			if b.claimed {
				b.next = r.cfg.Clock.Now() // it may have ended long ago
			}
			active = append(active, b)
		case outC <- head:
			ended = ended[1:]
		case <-timer:
		case <-r.stop.signal.Done():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pollOnce retrieves b and reports whether it has ended. The next poll is
// due an interval after this one's answer came: twice the last interval
// while the status stays, the first one when it changes.
func (r *runner) pollOnce(ctx context.Context, api *batchapi.Client, b *tbatch) bool {
	bo, err := api.Retrieve(ctx, b.id)
	now := r.cfg.Clock.Now()
	if err != nil {
		f := api.Failure(err)
		if f.Verdict != retry.Retry {
			r.cfg.Log.Warn("batch " + b.id + " cannot be retrieved: " + f.Msg + "; its lines are submitted again")
			b.lost = errors.New(f.Msg)
			return true
		}
		b.interval = min(2*b.interval, r.cfg.Batch.maxPoll())
		wait := max(b.interval, f.After)
		r.cfg.Log.Debug("poll failed", "batch", b.id, "error", f.Type, "status", f.Status, "wait", wait)
		b.next = now.Add(wait)
		return false
	}
	rc := bo.RequestCounts
	if d := rc.Completed + rc.Failed - b.answered; d != 0 {
		r.stats.BatchAnswered.Add(int64(d))
		b.answered += d
	}
	if bo.Status != b.status {
		b.status = bo.Status
		b.interval = r.cfg.Batch.poll()
		r.cfg.Log.Info("batch "+bo.Status, "batch", b.id, "completed", rc.Completed, "failed", rc.Failed, "total", rc.Total)
	} else {
		b.interval = min(2*b.interval, r.cfg.Batch.maxPoll())
	}
	b.next = now.Add(b.interval)
	switch bo.Status {
	case "completed", "failed", "expired", "cancelled":
		b.final = bo
		return true
	}
	return false
}
