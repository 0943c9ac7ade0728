package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/schema"
	"github.com/gptbatch/gptbatch/jsonl"
)

// A line's way with --schema (internal/schema holds the rules):
//
//   - prepare: holdToSchema sends the line with the flag's schema, unless
//     it names a format of its own (its own json_schema wins), and adds the
//     schema's tokens to its prompt, as the API bills them, so that every
//     estimate (the reservation, --max-cost, --batch-tokens, a dry run)
//     counts them. Without --schema a line's own json_schema format is
//     counted so too, though nothing holds its answer to it;
//   - the decoders (chat.go, responses.go): check holds each answer to it,
//     putting the value in parsed or, when it does not fit, making the
//     result invalid_output with the content kept;
//   - fetch: sendChecked asks an invalid answer again, up to
//     --schema-retries times, each try reserved, sent, settled and in the
//     ledger like any request;
//   - --via batch (batchschema.go): the collector checks each answer with
//     the same decoders, and an invalid one goes again in a follow-up
//     batch, built as sendChecked's re-asks are.
//
// For the response cache: a re-ask is a request of its own (its body has
// the invalid answer and the validator's message in it), and the answer
// to a line's first request is worth keeping only when it fits: one that
// does not would be served again and fail again. So what a line held to a
// schema stores under its first request's key is that request's answer
// when it.answered.invalid is nil, and nothing otherwise, whatever the
// re-asks got; an answer served from the cache goes through the decoders
// and is checked like a live one.

// schemaRun is what a run keeps for --schema: the schemas lines carry in
// their own bodies, compiled and counted once each (schema.Cache keeps a
// bounded number), and the flag's schema's token count by model. Safe for
// concurrent use; a nil *schemaRun keeps nothing.
type schemaRun struct {
	lines  schema.Cache
	counts sync.Map // schemaCount → int64: the flag's schema's tokens
}

// schemaCount names a count of a schema's tokens: by the model's encoder,
// or (not exact) by the byte bound.
type schemaCount struct {
	model string
	exact bool
}

// cache is the run's cache of line schemas; nil compiles every time.
func (s *schemaRun) cache() *schema.Cache {
	if s == nil {
		return nil
	}
	return &s.lines
}

// tokens is the prompt tokens sc adds to a request of model, counted as
// the line's prompt is: exactly, or by the byte bound. The flag's
// schema's count is kept, one a model; a line's own is counted each time
// (prepare counts it through ownTokens, which keeps it).
func (s *schemaRun) tokens(cfg *Config, sc *schema.Schema, model string, exact bool) int64 {
	key := schemaCount{model, exact}
	keep := s != nil && sc == cfg.Schema
	if keep {
		if n, ok := s.counts.Load(key); ok {
			return n.(int64)
		}
	}
	n := int64(sc.PromptTokens(schemaCounter(cfg, model, exact)))
	if keep {
		s.counts.Store(key, n)
	}
	return n
}

// ownTokens is the prompt tokens the json_schema format body names of its
// own adds to a request of model (schema.FormatTokens), 0 when it names
// none: kept in the run's cache of line schemas, one count a model and
// way of counting, so that lines carrying the same schema count it once.
func (s *schemaRun) ownTokens(cfg *Config, endpoint string, body []byte, model string, exact bool) int64 {
	return int64(s.cache().FormatTokens(endpoint, body, schemaCount{model, exact}, schemaCounter(cfg, model, exact)))
}

// schemaCounter counts a schema's text for a request of model as the
// line's prompt is counted: exactly, or by the byte bound.
func schemaCounter(cfg *Config, model string, exact bool) func(string) int {
	return func(text string) int {
		c, err := cfg.Tokens.Inputs(model, []string{text}, nil, exact)
		if err != nil || len(c) != 1 {
			return len(text) // the byte bound
		}
		return int(c[0])
	}
}

// holdToSchema is body, a chat or responses line's request, as it is sent
// with --schema (schema.Resolve), and holds the line to the schema its
// answer must fit, whose tokens join its prompt. Without --schema the body
// is sent as it is and held to nothing, but a json_schema format of its
// own is billed all the same: its tokens join the prompt, counted by the
// same rule. For embeddings it is body. fields are body's top-level
// fields: a line without --schema whose body names no format is passed
// by without reading body again: most lines, and reading it cost 5% of
// a request's CPU.
func (it *item) holdToSchema(cfg *Config, fields map[string]json.RawMessage, body []byte) ([]byte, error) {
	if it.endpoint == jsonl.EndpointEmbeddings {
		return body, nil
	}
	if _, named := fields[schema.FormatField(it.endpoint)]; cfg.Schema == nil && !named {
		return body, nil
	}
	out, held, err := schema.Resolve(cfg.Schema, cfg.schemas.cache(), it.endpoint, body)
	if err != nil {
		return nil, err
	}
	it.schema = held
	if held != nil && held == cfg.Schema {
		it.schemaTokens = cfg.schemas.tokens(cfg, held, it.model, it.exact)
	} else {
		// The line's own format, held to or not: a json_schema is counted
		// as the flag's would be, anything else is 0.
		it.schemaTokens = cfg.schemas.ownTokens(cfg, it.endpoint, body, it.model, it.exact)
	}
	it.prompt += it.schemaTokens
	return out, nil
}

// choiceAnswer is one choice of an answer, as the schema judges it.
type choiceAnswer struct {
	content      *string // nil when there is none: a refusal, only tool calls
	finishReason string
	refusal      string
}

// invalidAnswer is an answer that does not fit the schema: what was wrong
// with it, and its text, for the re-ask.
type invalidAnswer struct {
	verdict schema.Verdict
	content string
}

// check holds an answer's choices to it's schema, for a decoder. When
// every choice fits, res gets parsed: the value, or with n > 1 an array of
// every choice's (null for one that called a tool instead of answering).
// Otherwise res is an invalid_output error, its content kept, and check
// returns the first choice that does not fit, for the re-ask: a choice
// that does not fit fails the answer, as the line asked for n of them.
// A choice cut off at the output cap is never parsed.
func (it *item) check(res *jsonl.Result, choices []choiceAnswer) *invalidAnswer {
	parsed := make([]json.RawMessage, 0, len(choices))
	answered := false
	for _, ch := range choices {
		var content string
		if ch.content != nil {
			content = *ch.content
		}
		v := it.schema.Classify(content, ch.finishReason, ch.refusal)
		switch {
		case v.Retry():
			res.Error = &jsonl.Error{Type: jsonl.ErrInvalidOutput, Message: fmt.Sprintf("line %d: %s", it.req.Line, v.Message)}
			return &invalidAnswer{verdict: v, content: content}
		case v.Kind == schema.Valid:
			parsed = append(parsed, v.Parsed)
			answered = true
		default: // tool calls: not an answer to check
			parsed = append(parsed, json.RawMessage("null"))
		}
	}
	switch {
	case !answered:
	case len(parsed) == 1:
		res.Parsed = parsed[0]
	default:
		b := []byte{'['}
		for i, p := range parsed {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, p...)
		}
		res.Parsed = append(b, ']')
	}
	return nil
}

// sendChecked sends an admitted line (sendLine) and, while its answer does
// not fit the schema it is held to, asks again with schema.Reask's body:
// up to --schema-retries more tries, each reserved through the gate, sent
// with sendLine's retries, settled and written to the ledger like the
// first. The line's result is its last answer's, with usage, cost_usd and
// latency_ms the sums of its tries' and attempts every call made for it.
// A line still invalid after the last try keeps its last content and says
// invalid_output. A re-ask that cannot be sent (the run stopped, a limit
// it can never fit, a failure past the retries) leaves the last answer as
// the result, and its error says why.
func (r *runner) sendChecked(ctx context.Context, it *item, settle chan<- budget.Settlement) []*jsonl.Result {
	rs := r.sendLine(ctx, it, settle)
	res := rs[0]
	if it.schema == nil || it.result != nil || res.Usage == nil {
		return rs // not checked (a pack is not), or no answer to check
	}
	r.stats.Checked.Add(1)
	var sum tries
	sum.add(it)
	last, attempts := it, it.attempts
	var why string // why it was not asked again while tries remained
	for n := 1; last.answered.invalid != nil && n <= r.cfg.SchemaRetries; n++ {
		next, err := it.reask(&r.cfg, last)
		if err != nil {
			why = "not asked again: " + err.Error()
			break
		}
		if err := r.check(next.est); err != nil {
			why = "not asked again: " + err.Error()
			break
		}
		if _, next.reserved, err = r.reserve(ctx, []budget.Estimate{next.est}); err != nil {
			why = "not asked again: the run stopped"
			break
		}
		if n == 1 {
			r.stats.Reasked.Add(1)
		}
		r.stats.Reasks.Add(1)
		nres := r.sendLine(ctx, next, settle)[0]
		attempts = next.attempts
		if nres.Usage == nil {
			// Asking again failed past sendLine's retries: the answer
			// paid for before stands.
			why = "asking again failed: " + strings.TrimPrefix(nres.Error.Message, fmt.Sprintf("line %d: ", it.req.Line))
			break
		}
		r.stats.ReaskCost.Add(int64(next.answered.cost))
		sum.add(next)
		last, res = next, nres
	}
	sum.set(res, last.priced)
	res.Attempts = attempts
	if res.Error != nil && res.Error.Type == jsonl.ErrInvalidOutput {
		msg := last.answered.invalid.verdict.Message
		switch {
		case why != "":
			res.Error.Message = fmt.Sprintf("line %d: %s (%s)", it.req.Line, msg, why)
		case sum.n > 1:
			res.Error.Message = fmt.Sprintf("line %d: no answer fit the schema in %d tries; the last: %s", it.req.Line, sum.n, msg)
		}
	}
	return []*jsonl.Result{res}
}

// tries adds up the answers of a line's tries.
type tries struct {
	n       int
	usage   jsonl.Usage
	cost    budget.Cost
	latency int64
}

// add counts the answer it got.
func (t *tries) add(it *item) {
	var latency int64
	if len(it.answered.results) > 0 {
		latency = it.answered.results[0].LatencyMS
	}
	t.addAnswer(it.answered.usage, it.answered.cost, latency)
}

// addAnswer counts an answer: its usage, cost and latency.
func (t *tries) addAnswer(u jsonl.Usage, cost budget.Cost, latency int64) {
	t.n++
	t.usage.PromptTokens += u.PromptTokens
	t.usage.CompletionTokens += u.CompletionTokens
	t.usage.TotalTokens += u.TotalTokens
	t.usage.CachedTokens += u.CachedTokens
	t.usage.ReasoningTokens += u.ReasoningTokens
	t.cost += cost
	t.latency += latency
}

// set makes res, the last try's result, the line's: the tries' sums.
func (t *tries) set(res *jsonl.Result, priced bool) {
	if t.n < 2 {
		return
	}
	u := t.usage
	res.Usage = &u
	if priced {
		res.CostUSD = jsonl.CostOf(int64(t.cost))
	}
	res.LatencyMS = t.latency
}

// reask is the try after last, an answer of it's that did not fit its
// schema: the request schema.Reask builds from it's original body,
// counted and estimated as prepare would, its attempts going on from
// last's.
func (it *item) reask(cfg *Config, last *item) (*item, error) {
	bad := last.answered.invalid
	body, err := schema.Reask(it.endpoint, it.body, bad.content, bad.verdict)
	if err != nil {
		return nil, err
	}
	next := &item{
		req: it.req, endpoint: it.endpoint, ep: endpointFor(it.endpoint), model: it.model, body: body,
		price: it.price, prices: it.prices, schema: it.schema, prior: last.attempts,
		exact: it.exact || cfg.Tokens.Ready(it.model),
	}
	// Counted from the body as sent: resolve leaves a resolved body's
	// fields as they are.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, err
	}
	if err := next.ep.resolve(next, fields, cfg); err != nil {
		return nil, err
	}
	next.schemaTokens = cfg.schemas.tokens(cfg, it.schema, it.model, next.exact)
	next.prompt += next.schemaTokens
	next.tier, next.est = it.tier, it.price.Estimate(it.tier, next.prompt, next.maxOut)
	next.priced = !next.est.CostUnknown
	return next, nil
}
