package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// tokenize prepares lines on every core and sends them on in input order.
func (r *runner) tokenize(ctx context.Context, in <-chan *jsonl.Request, out chan<- *item) error {
	defer close(out)
	// Two lines a core in the window keep every core busy while the head
	// line, perhaps a long one, is counted.
	n := runtime.GOMAXPROCS(0)
	return orderedMap(ctx, n, 2*n, fromChan(in), out, func(req *jsonl.Request) *item {
		it := prepare(req, &r.cfg, r.countFirst)
		if r.cfg.Via == ViaBatch {
			it.batchPrice()
		}
		if it.result == nil && !it.priced && r.warnedPrice.CompareAndSwap(false, true) {
			r.cfg.Log.Warn(fmt.Sprintf("no price known for model %q: its cost_usd is null", it.model))
		}
		return it
	}, nil)
}

// Default output-token caps, sent when a line gives none, so that every
// request's reservation bounds what it can cost. Reasoning models spend
// hidden reasoning tokens out of the same cap and need more room.
const (
	defaultMaxTokens          = 256
	defaultReasoningMaxTokens = 4096
)

// item is one input line on its way through the stages.
type item struct {
	req      *jsonl.Request
	model    string
	body     []byte          // the exact JSON sent to the API
	prompt   int64           // prompt tokens by the chat formula
	maxOut   int64           // output tokens the request may use (max tokens × n)
	est      budget.Estimate // what reserving it charges
	price    budget.Price
	priced   bool
	exact    bool          // prompt is the exact count, not the byte bound
	result   *jsonl.Result // set when the line is finished without a call
	attempts int
}

// prepare resolves a line's model and output cap, writes its wire body and
// estimates it. A problem with the line becomes an invalid_input result.
// Unless exact, a line whose encoder is still being built is estimated by
// its byte count, an upper bound, so that the first requests need not wait
// for the encoder.
func prepare(req *jsonl.Request, cfg *Config, exact bool) *item {
	it := &item{req: req, model: cfg.Model}
	if req.Err != nil {
		it.result = errorResult(req, jsonl.ErrInvalidInput, req.Err.Error(), 0)
		return it
	}
	if err := it.resolve(cfg, exact); err != nil {
		it.result = errorResult(req, jsonl.ErrInvalidInput, fmt.Sprintf("line %d: %v", req.Line, err), 0)
		return it
	}
	return it
}

func (it *item) resolve(cfg *Config, exact bool) error {
	body := it.req.Body
	if raw, ok := body["model"]; ok {
		if err := json.Unmarshal(raw, &it.model); err != nil || it.model == "" {
			return fmt.Errorf("model must be a non-empty string")
		}
	} else {
		body["model"] = mustJSON(it.model)
	}
	if raw, ok := body["stream"]; ok && string(raw) != "false" {
		return fmt.Errorf("stream is not supported: gptbatch writes whole answers")
	}
	// The o-series and gpt-5 refuse max_tokens; they take the same cap as
	// max_completion_tokens.
	reasoning := isReasoningModel(it.model)
	if raw, ok := body["max_tokens"]; ok && reasoning {
		if _, both := body["max_completion_tokens"]; !both {
			body["max_completion_tokens"] = raw
		}
		delete(body, "max_tokens")
	}
	capField := "max_tokens"
	if reasoning {
		capField = "max_completion_tokens"
	}
	maxOut := int64(0)
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		raw, ok := body[f]
		if !ok || string(raw) == "null" {
			continue
		}
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("%s must be a positive integer, not %.40s", f, raw)
		}
		if maxOut == 0 || n < maxOut {
			maxOut = n
		}
	}
	if maxOut == 0 {
		maxOut = cfg.MaxTokens
		if maxOut == 0 {
			maxOut = defaultMaxTokens
			if reasoning {
				maxOut = defaultReasoningMaxTokens
			}
		}
		body[capField] = mustJSON(maxOut)
	}
	choices := int64(1)
	if raw, ok := body["n"]; ok && string(raw) != "null" {
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n <= 0 || n > 128 {
			return fmt.Errorf("n must be an integer from 1 to 128, not %.40s", raw)
		}
		choices = n
	}
	it.exact = exact || encoderReady(it.model)
	count := func() (int64, error) { return promptTokens(it.model, body["messages"], body["tools"]) }
	if !it.exact {
		count = func() (int64, error) { return promptTokenBound(body["messages"], body["tools"]) }
	}
	prompt, err := count()
	if err != nil {
		return err
	}
	it.prompt = prompt
	it.maxOut = maxOut * choices
	it.price, it.priced = budget.PriceOf(it.model)
	it.est = budget.Estimate{Tokens: it.prompt + it.maxOut}
	if it.priced {
		it.est.Cost = it.price.Cost(it.prompt, 0, it.maxOut)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	it.body = b
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with strings and integers
	}
	return b
}

// errorResult is the result of a line that failed with type typ.
func errorResult(req *jsonl.Request, typ, msg string, status int) *jsonl.Result {
	return &jsonl.Result{
		ID:       req.ID,
		Line:     req.Line,
		Metadata: req.Metadata,
		Error:    &jsonl.Error{Type: typ, Message: msg, Status: status},
	}
}
