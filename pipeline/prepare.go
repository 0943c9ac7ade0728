package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"strconv"
	"strings"

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
		if it := r.unsent(req); it != nil {
			return it
		}
		it := prepare(req, &r.cfg, r.countFirst)
		if r.cfg.Via == ViaBatch {
			it.batchPrice()
		}
		if it.result == nil && !it.priced && r.stats.unpriced(it.model, it.tier) {
			what := "price"
			if it.tier == budget.TierPriority {
				what = "priority price"
			}
			r.cfg.Log.Warn(fmt.Sprintf("no %s known for model %q: its cost_usd is null, and a dollar limit refuses it; "+
				"give its price in LiteLLM's format with --prices FILE, or store it for every run with gptbatch prices load FILE", what, it.model))
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

// item is one input line on its way through the stages, or (--pack) a
// request that carries several.
type item struct {
	req      *jsonl.Request
	endpoint string // jsonl.EndpointChat, EndpointResponses or EndpointEmbeddings
	model    string
	body     []byte             // the exact JSON sent to the API
	prompt   int64              // prompt tokens as the API counts them (chat: by the chat formula)
	maxOut   int64              // output tokens the request may use (max tokens × n)
	est      budget.Estimate    // what reserving it charges
	price    *budget.ModelPrice // nil when the model's price is unknown
	tier     budget.Tier        // the tier it is estimated at: standard, priority or (--via batch) batch
	priced   bool               // its price on tier is known
	prices   *budget.Prices     // the table it is priced by
	exact    bool               // prompt is the exact count, not the byte bound
	result   *jsonl.Result      // set when the line is finished without a call
	attempts int

	// Embeddings.
	single  bool            // one input (a text or a token array): the result has "embedding"
	floats  bool            // gptbatch chose base64 on the wire: the result has floats
	input   json.RawMessage // the input as the line gave it
	packKey string          // lines with equal keys may share a request (--pack); "" may not

	// A pack (--pack): the lines sent in one request, in input order. req is
	// the first one's; results are theirs once the request is answered.
	members []*item
	results []*jsonl.Result
}

// prepare resolves a line's model and output cap, writes its wire body and
// estimates it. A problem with the line becomes an invalid_input result.
// Unless exact, a line whose encoder is still being built is estimated by
// its byte count, an upper bound, so that the first requests need not wait
// for the encoder.
func prepare(req *jsonl.Request, cfg *Config, exact bool) *item {
	it := &item{req: req, model: cfg.Model, endpoint: req.Endpoint}
	if req.Err != nil {
		it.result = errorResult(req, jsonl.ErrInvalidInput, req.Err.Error(), 0)
		return it
	}
	if it.endpoint == "" {
		it.endpoint = jsonl.EndpointChat
	}
	if err := it.resolve(cfg, exact); err != nil {
		it.result = errorResult(req, jsonl.ErrInvalidInput, fmt.Sprintf("line %d: %v", req.Line, err), 0)
		return it
	}
	return it
}

func (it *item) resolve(cfg *Config, exact bool) error {
	// The line's own body stays as it was: a line prepared again (counted
	// exactly) must not take what this added for its own.
	body := maps.Clone(it.req.Body)
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
	if _, ok := body["service_tier"]; !ok && cfg.ServiceTier != "" && it.endpoint != jsonl.EndpointEmbeddings {
		body["service_tier"] = mustJSON(cfg.ServiceTier)
	}
	it.exact = exact || cfg.Tokens.Ready(it.model)
	var err error
	switch it.endpoint {
	case jsonl.EndpointEmbeddings:
		err = it.resolveEmbeddings(body, cfg)
	case jsonl.EndpointResponses:
		err = it.resolveResponses(body, cfg)
	default:
		err = it.resolveChat(body, cfg)
	}
	if err != nil {
		return err
	}
	it.prices = cfg.Prices
	it.price, _ = cfg.Prices.Lookup(it.model)
	// A line asking for priority is estimated at priority's price; flex
	// costs no more than the standard price it is estimated at.
	var tier string
	if raw, ok := body["service_tier"]; ok {
		_ = json.Unmarshal(raw, &tier)
	}
	it.setTier(budget.TierOf(tier))
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	it.body = b
	return nil
}

// isReasoningModel reports whether model takes max_completion_tokens and
// spends hidden reasoning tokens: the o-series and gpt-5, gpt-5.4 and the
// rest of the gpt-5.x family.
func isReasoningModel(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5"} {
		if model == p || strings.HasPrefix(model, p+"-") || strings.HasPrefix(model, p+".") {
			return true
		}
	}
	return false
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

// resolveChat sets a chat-completions request's output cap and counts it.
func (it *item) resolveChat(body map[string]json.RawMessage, cfg *Config) error {
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
		n, err := positive(body, f)
		if err != nil {
			return err
		}
		if n > 0 && (maxOut == 0 || n < maxOut) {
			maxOut = n
		}
	}
	if maxOut == 0 {
		maxOut = outputCap(cfg, reasoning)
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
	prompt, err := it.countMessages(cfg.Tokens, body["messages"], body["tools"])
	if err != nil {
		return err
	}
	it.prompt = prompt
	it.maxOut = maxOut * choices
	return nil
}

// countMessages counts chat messages by the chat formula: exactly, or by
// the byte bound while the encoder is being built.
func (it *item) countMessages(tc TokenCounter, messages, tools json.RawMessage) (int64, error) {
	return tc.Chat(it.model, messages, tools, it.exact)
}

// resolveResponses sets a Responses API request's output cap and store,
// and counts its input by the chat formula on the messages it amounts to.
func (it *item) resolveResponses(body map[string]json.RawMessage, cfg *Config) error {
	maxOut, err := positive(body, "max_output_tokens")
	if err != nil {
		return err
	}
	// A chat habit: the Responses API refuses max_tokens and
	// max_completion_tokens, and takes the same cap as max_output_tokens.
	for _, f := range []string{"max_completion_tokens", "max_tokens"} {
		n, err := positive(body, f)
		if err != nil {
			return err
		}
		delete(body, f)
		if maxOut == 0 && n > 0 {
			maxOut = n
			body["max_output_tokens"] = mustJSON(n)
		}
	}
	if maxOut == 0 {
		maxOut = outputCap(cfg, isReasoningModel(it.model))
		body["max_output_tokens"] = mustJSON(maxOut)
	}
	if _, ok := body["store"]; !ok {
		// A filter should not leave its answers stored at OpenAI.
		body["store"] = json.RawMessage("false")
	}
	msgs, err := responsesMessages(body["instructions"], body["input"])
	if err != nil {
		return err
	}
	prompt, err := it.countMessages(cfg.Tokens, msgs, body["tools"])
	if err != nil {
		return err
	}
	it.prompt, it.maxOut = prompt, maxOut
	return nil
}

// responsesMessages are the chat messages a Responses API request's
// instructions and input amount to, for counting: the instructions as a
// system message, a string input as a user message, message items as
// messages, a function call as an assistant's tool call and its output as
// a tool message. Other items count as their JSON text, which errs high.
func responsesMessages(instructions, input json.RawMessage) (json.RawMessage, error) {
	var msgs []map[string]any
	if len(instructions) > 0 && string(instructions) != "null" {
		var s string
		if err := json.Unmarshal(instructions, &s); err != nil {
			return nil, fmt.Errorf("instructions must be a string")
		}
		if s != "" {
			msgs = append(msgs, map[string]any{"role": "system", "content": s})
		}
	}
	var one string
	if err := json.Unmarshal(input, &one); err == nil {
		msgs = append(msgs, map[string]any{"role": "user", "content": one})
		return json.Marshal(msgs)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, fmt.Errorf("input must be a string or an array of input items")
	}
	for i, item := range items {
		var typ, role string
		json.Unmarshal(item["type"], &typ)  //nolint:errcheck // "" is a message
		json.Unmarshal(item["role"], &role) //nolint:errcheck // checked below
		switch typ {
		case "", "message":
			if role == "" {
				return nil, fmt.Errorf("input[%d] has no \"role\"", i)
			}
			msgs = append(msgs, map[string]any{"role": role, "content": item["content"]})
		case "function_call":
			call := map[string]json.RawMessage{"name": item["name"], "arguments": item["arguments"]}
			msgs = append(msgs, map[string]any{"role": "assistant", "tool_calls": []any{call}})
		case "function_call_output":
			msgs = append(msgs, map[string]any{"role": "tool", "content": string(item["output"])})
		default:
			b, _ := json.Marshal(item) // it was just decoded
			msgs = append(msgs, map[string]any{"role": "user", "content": string(b)})
		}
	}
	return json.Marshal(msgs)
}

// The embeddings endpoint's limits: a request over them is refused, so a
// line over them is invalid before it is sent.
const (
	maxEmbeddingInputs        = 2048
	maxEmbeddingInputTokens   = 8192
	maxEmbeddingRequestTokens = 300_000
)

// resolveEmbeddings counts an embeddings request's inputs with the
// model's encoding and no overhead, as the API does, checks them against
// the API's limits and asks for base64 vectors unless the line chose.
func (it *item) resolveEmbeddings(body map[string]json.RawMessage, cfg *Config) error {
	it.input = body["input"]
	texts, arrays, single, err := embeddingInputs(it.input)
	if err != nil {
		return err
	}
	it.single = single
	if n := len(texts) + len(arrays); n > maxEmbeddingInputs {
		return fmt.Errorf("input has %d items: the embeddings API takes at most %d inputs a request", n, maxEmbeddingInputs)
	}
	counts, err := it.countInputs(cfg.Tokens, texts, arrays)
	if err != nil {
		return err
	}
	if !it.exact && overEmbeddingLimits(counts) != nil {
		// The byte bound may be what is over a limit: count exactly.
		it.exact = true
		if counts, err = it.countInputs(cfg.Tokens, texts, arrays); err != nil {
			return err
		}
	}
	if err := overEmbeddingLimits(counts); err != nil {
		return err
	}
	for i, t := range texts {
		if t == "" {
			return fmt.Errorf("input %d is empty: the embeddings API refuses empty inputs", i)
		}
	}
	var total int64
	for _, n := range counts {
		total += n
	}
	it.prompt, it.maxOut = total, 0
	if _, ok := body["encoding_format"]; !ok {
		// A quarter of the bytes of the floats' text; the result has floats.
		body["encoding_format"] = json.RawMessage(`"base64"`)
		it.floats = true
	}
	if single {
		// Lines alike in all but their input may share a request.
		rest := make(map[string]json.RawMessage, len(body))
		for k, v := range body {
			if k != "input" {
				rest[k] = v
			}
		}
		key, err := json.Marshal(rest)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		it.packKey = string(key)
	}
	return nil
}

// embeddingInputs reads an embeddings input: a string, strings, a token
// array or token arrays. single says it is one text or one token array.
func embeddingInputs(raw json.RawMessage) (texts []string, tokens [][]int64, single bool, err error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil, true, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, nil, false, fmt.Errorf("input must be a string, an array of strings or an array of token arrays")
	}
	if len(items) == 0 {
		return nil, nil, false, fmt.Errorf("input is empty")
	}
	var toks []int64
	if json.Unmarshal(raw, &toks) == nil {
		return nil, [][]int64{toks}, true, nil
	}
	for i, item := range items {
		var s string
		var t []int64
		switch {
		case json.Unmarshal(item, &s) == nil:
			texts = append(texts, s)
		case json.Unmarshal(item, &t) == nil && len(t) > 0:
			tokens = append(tokens, t)
		default:
			return nil, nil, false, fmt.Errorf("input[%d] must be a string or a non-empty array of tokens", i)
		}
	}
	return texts, tokens, false, nil
}

// countInputs counts each input's tokens: texts with the model's encoding
// (or their bytes, a bound, until it is built), token arrays by length.
func (it *item) countInputs(tc TokenCounter, texts []string, arrays [][]int64) ([]int64, error) {
	return tc.Inputs(it.model, texts, arrays, it.exact)
}

// overEmbeddingLimits says which token limit of the embeddings API the
// inputs' counts break, if any.
func overEmbeddingLimits(counts []int64) error {
	var total int64
	for i, n := range counts {
		if n > maxEmbeddingInputTokens {
			return fmt.Errorf("input %d has %d tokens: the embeddings API takes at most %d tokens an input", i, n, maxEmbeddingInputTokens)
		}
		total += n
	}
	if total > maxEmbeddingRequestTokens {
		return fmt.Errorf("input has %d tokens: the embeddings API takes at most %d tokens a request", total, maxEmbeddingRequestTokens)
	}
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
