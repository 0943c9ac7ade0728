package pipeline

import (
	"fmt"
	"slices"
	"sync"
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

	// The estimates, counted as hold takes the lines: in a dry run and
	// when the batch is held (--batch-tokens, --max-cost, Config.Confirm);
	// a run with neither has none.
	Estimated       atomic.Int64 // lines estimated
	EstPromptTokens atomic.Int64
	EstOutputTokens atomic.Int64 // the lines' output caps
	EstCostMin      atomic.Int64 // budget.Cost of the prompts alone
	EstCostMax      atomic.Int64 // budget.Cost with every output cap used
	EstUnpriced     atomic.Int64 // lines estimated whose model has no known price
	EstSchemaTokens atomic.Int64 // of EstPromptTokens, the json_schema formats' share

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
	Checked          atomic.Int64 // lines whose answer was held to a schema (--schema)
	Reasked          atomic.Int64 // of those, lines asked again at least once
	Reasks           atomic.Int64 // requests that asked an invalid answer again
	ReaskCost        atomic.Int64 // budget.Cost of the answers to them

	// The response cache: lines answered from it, or by the call of an
	// identical line of the run, without a call of their own.
	CacheFound atomic.Int64 // such lines as the lookup found them, before sending (--confirm's)
	CacheHits  atomic.Int64 // such lines answered (a dry run: found in the cache)
	CacheSaved atomic.Int64 // budget.Cost their answers cost when they were paid for

	waiting   atomic.Pointer[Waiting] // what admission waits for, for progress
	batchPlan atomic.Value            // string: how --dry-run --via batch would split the lines
	noPrice   sync.Map                // model and tier (unpricedKey) → struct{}: the models of unknown price
}

// unpricedKey is a model of unknown price on a tier.
type unpricedKey struct {
	model string
	tier  budget.Tier
}

// unpriced records that model has no known price on tier, and reports
// whether it is the first time.
func (s *Stats) unpriced(model string, tier budget.Tier) bool {
	_, seen := s.noPrice.LoadOrStore(unpricedKey{model, tier}, struct{}{})
	return !seen
}

// UnpricedModels are the models of the lines estimated with no known
// price, sorted ("gpt-x (priority)" for a line asking for a tier whose
// price is unknown).
func (s *Stats) UnpricedModels() []string {
	var names []string
	s.noPrice.Range(func(k, _ any) bool {
		u := k.(unpricedKey)
		name := u.model
		if u.tier == budget.TierPriority {
			name += " (priority)"
		}
		names = append(names, name)
		return true
	})
	slices.Sort(names)
	return names
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
	s.EstSchemaTokens.Add(it.schemaTokens)
	if it.priced {
		prompts, _ := it.price.Cost(it.tier, it.prompt, 0, 0)
		s.EstCostMin.Add(int64(prompts))
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

// Count is n and its noun, one or many, for messages: "1 line", "2 lines".
func Count[N ~int | ~int32 | ~int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
