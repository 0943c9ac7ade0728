package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/redistest"
)

// The test binary is also the processes the tests start: with
// envOpen set it opens the cache there and prints what happened; with
// envWorker set it is one of the processes sharing a cache.
const (
	envOpen   = "GPTBATCH_CACHE_TEST_OPEN"   // a path
	envWorker = "GPTBATCH_CACHE_TEST_WORKER" // path,worker number
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envOpen); path != "" {
		f, err := OpenFile(context.Background(), path, Options{})
		if err != nil {
			fmt.Printf("ErrUnusable %t: %v\n", errors.Is(err, ErrUnusable), err)
		} else {
			f.Close()
			fmt.Println("opened")
		}
		os.Exit(0)
	}
	if w := os.Getenv(envWorker); w != "" {
		path, n, _ := strings.Cut(w, ",")
		i, _ := strconv.Atoi(n)
		if err := worker(path, i); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(redistest.Main(m)) // stops the redis-server the tests share
}

// The processes' keys: worker i works on keys i*workerStride up to
// i*workerStride+workerKeys, so that each shares half of its keys with the
// next worker and two workers are on every key of the middle.
const (
	workers      = 4
	workerKeys   = 1000
	workerStride = 500
	workerBlock  = 50
	allKeys      = (workers-1)*workerStride + workerKeys
)

// worker is one process sharing the cache at path: it opens it (all of
// them at once, a new file), then twice over its keys in a random order,
// a block at a time: GetMany, check every hit is the answer to its key,
// and Put the misses and some of the hits again.
func worker(path string, i int) error {
	ctx := context.Background()
	f, err := OpenFile(ctx, path, Options{})
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(uint64(i), 2))
	for pass := range 2 {
		order := r.Perm(workerKeys)
		for start := 0; start < len(order); start += workerBlock {
			var keys []Key
			var nums []int
			for _, o := range order[start : start+workerBlock] {
				nums = append(nums, i*workerStride+o)
				keys = append(keys, testKey(i*workerStride+o))
			}
			got, err := f.GetMany(ctx, keys)
			if err != nil {
				return fmt.Errorf("worker %d, pass %d: %w", i, pass, err)
			}
			var put []Entry
			for j, e := range got {
				want := testEntry(nums[j], time.Now())
				if e == nil || r.IntN(10) == 0 {
					put = append(put, want)
				}
				if e != nil && (e.Key != want.Key || !bytes.Equal(e.Body, want.Body) || e.Cost != want.Cost) {
					return fmt.Errorf("worker %d: key %d answered %s, want %s", i, nums[j], e.Body, want.Body)
				}
			}
			if err := f.Put(ctx, put...); err != nil {
				return fmt.Errorf("worker %d, pass %d: %w", i, pass, err)
			}
			if err := f.RecordHits(ctx, int64(len(got)-len(put)), 1); err != nil {
				return fmt.Errorf("worker %d, pass %d: %w", i, pass, err)
			}
		}
	}
	return nil
}
