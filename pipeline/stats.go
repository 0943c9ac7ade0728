package pipeline

import (
	"sync/atomic"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// Stats are a run's counters. Run updates them as it goes; any goroutine may
// read them at any time (progress does).
type Stats struct {
	Lines   atomic.Int64 // non-blank lines read, not counting skipped ones
	Total   atomic.Int64 // lines in the batch once known, else 0
	Skipped atomic.Int64 // lines --resume found done

	Estimated       atomic.Int64 // lines estimated
	EstPromptTokens atomic.Int64
	EstOutputTokens atomic.Int64 // the lines' output caps
	EstCostMin      atomic.Int64 // budget.Cost of the prompts alone
	EstCostMax      atomic.Int64 // budget.Cost with every output cap used
	EstUnpriced     atomic.Int64 // lines estimated whose model has no known price

	Succeeded        atomic.Int64 // results (or estimates) written without an error
	Failed           atomic.Int64 // results (or estimates) written with one
	Requests         atomic.Int64 // API calls made
	Retries          atomic.Int64
	RateLimited      atomic.Int64 // 429 answers
	PromptTokens     atomic.Int64 // as the API reported them
	CompletionTokens atomic.Int64
	CachedTokens     atomic.Int64
	Cost             atomic.Int64 // budget.Cost of the calls with a known price
	Unpriced         atomic.Int64 // calls whose model has no known price
	BatchLines       atomic.Int64 // --via batch: lines submitted in batches
	BatchAnswered    atomic.Int64 // --via batch: of those, answered so far (the batches' request_counts)

	waiting   atomic.Pointer[Waiting] // what admission waits for, for progress
	batchPlan atomic.Value            // string: how --dry-run --via batch would split the lines
}

// Waiting is what holds the run back.
type Waiting struct {
	Reason budget.Reason
	Until  time.Time
}

// BatchPlan is how a dry run --via batch would split the lines into batch
// files, or "" before one has counted them all.
func (s *Stats) BatchPlan() string {
	plan, _ := s.batchPlan.Load().(string)
	return plan
}

// Waiting reports what the run is waiting for, or nil when it is not.
func (s *Stats) Waiting() *Waiting { return s.waiting.Load() }

func (s *Stats) estimate(it *item) {
	s.Estimated.Add(1)
	s.EstPromptTokens.Add(it.prompt)
	s.EstOutputTokens.Add(it.maxOut)
	if it.priced {
		s.EstCostMin.Add(int64(it.price.Cost(it.prompt, 0, 0)))
		s.EstCostMax.Add(int64(it.est.Cost))
	} else {
		s.EstUnpriced.Add(1)
	}
}

// result counts a written result.
func (s *Stats) result(r *jsonl.Result) { s.wrote(r.Error != nil) }

// wrote counts a line written, failed or not.
func (s *Stats) wrote(failed bool) {
	if failed {
		s.Failed.Add(1)
	} else {
		s.Succeeded.Add(1)
	}
}

// Written is the lines written so far: results, or a dry run's estimates.
func (s *Stats) Written() int64 { return s.Succeeded.Load() + s.Failed.Load() }
