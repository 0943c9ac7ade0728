package pipeline

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// source gives a stage its next values: up to n of them and at least one,
// waiting for the first; none and a nil error at the end. A stage calls it
// only when it can take n values at once, so a source that does work per
// value (admission) does it just ahead of a free worker.
type source[A any] func(ctx context.Context, n int) ([]A, error)

// fromChan is the source of the values sent on in.
func fromChan[A any](in <-chan A) source[A] {
	return func(ctx context.Context, n int) ([]A, error) {
		select {
		case a, ok := <-in:
			if !ok {
				return nil, nil
			}
			return drainReady(in, append(make([]A, 0, n), a), n), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// drainReady appends to batch the values already waiting on in, until
// batch holds max of them; it never waits.
func drainReady[A any](in <-chan A, batch []A, max int) []A {
	for len(batch) < max {
		select {
		case a, ok := <-in:
			if !ok {
				return batch
			}
			batch = append(batch, a)
		default:
			return batch
		}
	}
	return batch
}

// places is a counting semaphore: a token for each free place.
type places chan struct{}

func newPlaces(n int) places {
	t := make(places, n)
	for range n {
		t <- struct{}{}
	}
	return t
}

// put gives back n tokens. It never blocks: only what was taken comes back.
func (t places) put(n int) {
	for range n {
		t <- struct{}{}
	}
}

// take waits for a token of each of ts, then takes as many more of each as
// are free at once, up to max; it returns how many of each it took.
func take(ctx context.Context, max int, ts ...places) (int, error) {
	for i, t := range ts {
		select {
		case <-t:
		case <-ctx.Done():
			for _, u := range ts[:i] {
				u.put(1)
			}
			return 0, ctx.Err()
		}
	}
	n := 1
	for ; n < max; n++ {
		for i, t := range ts {
			select {
			case <-t:
				continue
			default:
			}
			for _, u := range ts[:i] {
				u.put(1)
			}
			return n, nil
		}
	}
	return n, nil
}

// orderedMap applies f to the values of next on workers goroutines and
// sends the results to out in input order, like sourcegraph/conc's
// stream: one slot per value, queued in submit order. It takes values from
// next only for an idle worker and a free place in the window, the values
// taken whose results have not gone to out: a slow value at the head holds
// back at most window-1 results. stalled, if not nil, hears of a head that
// holds back a full window. It returns when next is at its end and every
// result has gone to out, or on the first error.
func orderedMap[A, B any](ctx context.Context, workers, window int, next source[A], out chan<- B, f func(A) B, stalled func(head A)) error {
	type task struct {
		a    A
		slot chan B // filled once: a worker never waits for the collector
	}
	idle, room := newPlaces(workers), newPlaces(window)
	tasks := make(chan task, workers) // a task is queued only for an idle worker: never blocks
	queue := make(chan task, window)  // the tasks in input order, one per place: never blocks
	full := make(chan struct{}, 1)    // the submitter found the window full
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		defer close(queue)
		for {
			if len(room) == 0 {
				select {
				case full <- struct{}{}:
				default: // one is waiting to be heard already
				}
			}
			n, err := take(ctx, workers, idle, room)
			if err != nil {
				return err
			}
			as, err := next(ctx, n)
			idle.put(n - len(as))
			room.put(n - len(as))
			if err != nil || len(as) == 0 {
				return err
			}
			for _, a := range as {
				t := task{a, make(chan B, 1)}
				queue <- t
				tasks <- t
			}
		}
	})
	for range workers {
		g.Go(func() error {
			for t := range tasks {
				t.slot <- f(t.a)
				idle.put(1)
			}
			return nil
		})
	}
	g.Go(func() error {
		for t := range queue {
			b, err := await(ctx, t.slot, full, func() bool {
				// A stale signal may come while the window has room.
				if len(room) > 0 {
					return false
				}
				if stalled != nil {
					stalled(t.a)
				}
				return true
			})
			if err != nil {
				return err
			}
			if err := send(ctx, out, b); err != nil {
				return err
			}
			room.put(1)
		}
		return nil
	})
	return g.Wait()
}

// await receives the value of slot. A signal that comes first calls full,
// until full reports it was heard.
func await[B any](ctx context.Context, slot <-chan B, signal <-chan struct{}, full func() bool) (B, error) {
	for {
		select {
		case b := <-slot:
			return b, nil
		case <-signal:
			if full() {
				signal = nil
			}
		case <-ctx.Done():
			var zero B
			return zero, ctx.Err()
		}
	}
}

// unorderedMap applies f to the values of next on workers goroutines and
// sends each result to out as soon as it is ready. Like orderedMap, it
// takes values only for an idle worker.
func unorderedMap[A, B any](ctx context.Context, workers int, next source[A], out chan<- B, f func(A) B) error {
	idle := newPlaces(workers)
	tasks := make(chan A, workers) // queued only for an idle worker: never blocks
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		for {
			n, err := take(ctx, workers, idle)
			if err != nil {
				return err
			}
			as, err := next(ctx, n)
			idle.put(n - len(as))
			if err != nil || len(as) == 0 {
				return err
			}
			for _, a := range as {
				tasks <- a
			}
		}
	})
	for range workers {
		g.Go(func() error {
			for a := range tasks {
				if err := send(ctx, out, f(a)); err != nil {
					return err
				}
				idle.put(1)
			}
			return nil
		})
	}
	return g.Wait()
}
