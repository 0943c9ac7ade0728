package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// prepareLine is prepare as the prepare stage's workers run it (see run):
// counted exactly from the start when every estimate must be exact before
// anything is sent (countFirst), unless the response cache's lookup counts
// the lines it does not answer (countLater).
func (r *runner) prepareLine(req *jsonl.Request) *item {
	return r.prepare(req, r.countFirst && !r.cfg.countLater)
}

// Default output-token caps, sent when a line gives none, so that every
// request's reservation bounds what it can cost. Reasoning models spend
// hidden reasoning tokens out of the same cap and need more room.
const (
	defaultMaxTokens          = 256
	defaultReasoningMaxTokens = 4096
)

// prepare resolves a line's model and output cap, writes its wire body and
// estimates it. A problem with the line becomes an invalid_input result.
// Unless exact, a line whose encoder is still being built is estimated by
// its byte count, an upper bound, so that the first requests need not wait
// for the encoder. A line read after the run stopped sending is not
// counted: it gets the result that says why.
func (r *runner) prepare(req *jsonl.Request, exact bool) *item {
	cfg := &r.cfg
	it := &item{req: req, model: cfg.Model, endpoint: req.Endpoint}
	if why := r.stop.stopped(); why != nil && !cfg.DryRun && req.Err == nil {
		it.result = why.result(req)
		return it
	}
	if req.Err != nil {
		it.result = errorResult(req, jsonl.ErrInvalidInput, req.Err.Error(), 0)
		return it
	}
	invalid := func(err error) *item {
		it.result = errorResult(req, jsonl.ErrInvalidInput, fmt.Sprintf("line %d: %v", req.Line, err), 0)
		return it
	}
	if it.endpoint == "" {
		it.endpoint = jsonl.EndpointChat
	}
	// The line's own body stays as it was: a line prepared again (counted
	// exactly) must not take what this added for its own.
	body := maps.Clone(req.Body)
	if raw, ok := body["model"]; ok {
		if err := json.Unmarshal(raw, &it.model); err != nil || it.model == "" {
			return invalid(errors.New("model must be a non-empty string"))
		}
	} else {
		body["model"] = mustJSON(it.model)
	}
	if raw, ok := body["stream"]; ok && string(raw) != "false" {
		return invalid(errors.New("stream is not supported: gptbatch writes whole answers"))
	}
	it.ep = endpointFor(it.endpoint)
	if _, ok := body["service_tier"]; !ok && cfg.ServiceTier != "" && it.ep.tiers {
		body["service_tier"] = mustJSON(cfg.ServiceTier)
	}
	it.exact = exact || !cfg.countLater && cfg.Tokens.Ready(it.model)
	if err := it.ep.resolve(it, body, cfg); err != nil {
		return invalid(err)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return invalid(fmt.Errorf("encode request: %w", err))
	}
	it.body = b
	if it.endpoint != jsonl.EndpointEmbeddings {
		// Before the estimate: a schema, the flag's or the line's own, is
		// billed as prompt tokens.
		if it.body, err = it.holdToSchema(cfg, body, b); err != nil {
			return invalid(err)
		}
	}
	// A line asking for priority is estimated at priority's price; flex
	// costs no more than the standard price it is estimated at. Through
	// the Batch API every line is at its prices.
	var tier string
	if raw, ok := body["service_tier"]; ok {
		_ = json.Unmarshal(raw, &tier)
	}
	it.prices, it.tier = cfg.Prices, budget.TierOf(tier)
	if cfg.Via == ViaBatch {
		it.tier = budget.TierBatch
	}
	it.price, it.est = cfg.Prices.Quote(it.model, it.tier, it.prompt, it.maxOut)
	it.priced = !it.est.CostUnknown
	if it.result == nil && it.unbounded != "" {
		r.unbounded(it)
	}
	if it.result == nil && !it.priced && r.stats.unpriced(it.model, it.tier) {
		what := "price"
		if it.tier == budget.TierPriority {
			what = "priority price"
		}
		cfg.Log.Warn(fmt.Sprintf("no %s known for model %q: its cost_usd is null, and a dollar limit refuses it; "+
			"give its price in LiteLLM's format with --prices FILE, or store it for every run with gptbatch prices load FILE", what, it.model))
	}
	return it
}

// outputCap is the cap a line without one gets: --max-tokens, else the
// default for the model.
func outputCap(cfg *Config, reasoning bool) int64 {
	switch {
	case cfg.MaxTokens > 0:
		return cfg.MaxTokens
	case reasoning:
		return defaultReasoningMaxTokens
	}
	return defaultMaxTokens
}

// positive reads a field that must be a positive integer; 0 if absent or
// null.
func positive(body map[string]json.RawMessage, f string) (int64, error) {
	raw, ok := body[f]
	if !ok || string(raw) == "null" {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s must be a positive integer, not %.40s", f, raw)
	}
	return n, nil
}
