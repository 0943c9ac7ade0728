package pipeline

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// orderedMap applies f to each value from in on workers goroutines and
// sends the results to out in input order, like sourcegraph/conc's stream:
// one slot per value, queued in submit order, at most 2×workers in flight.
func orderedMap[A, B any](ctx context.Context, workers int, in <-chan A, out chan<- B, f func(A) B) error {
	type task struct {
		a    A
		slot chan B
	}
	tasks := make(chan task)              // unbuffered: a task waits for a free worker
	queue := make(chan chan B, 2*workers) // the slots in submit order; bounds the values in flight
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		defer close(queue)
		for a := range in {
			slot := make(chan B, 1)
			if err := send(ctx, queue, slot); err != nil {
				return err
			}
			if err := send(ctx, tasks, task{a, slot}); err != nil {
				return err
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for t := range tasks {
				t.slot <- f(t.a)
			}
			return nil
		})
	}
	g.Go(func() error {
		for slot := range queue {
			select {
			case b := <-slot:
				if err := send(ctx, out, b); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}
