package pipeline

import (
	"context"
	"encoding/json"
	"net/http"

	gojson "github.com/goccy/go-json"
	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
)

// endpoint is what the stages know of one API endpoint. Each has a file of
// its own (chat.go, responses.go, embeddings.go) that says how a line
// becomes its request body and how its answer becomes a result, and a
// line in endpoints: adding an endpoint is a file like those and that line
// (and jsonl's url and the forms its lines take).
type endpoint struct {
	what  string // what its answer is called, for errors
	tiers bool   // it takes a service_tier (--service-tier)
	// resolve sets a line's output cap and the rest of its request body
	// and counts its prompt.
	resolve func(it *item, body map[string]json.RawMessage, cfg *Config) error
	// call sends the request ctx carries (see rawBodyDoer) through
	// go-openai, which picks the URL and checks the model.
	call func(ctx context.Context, c *openai.Client, model string) error
	// body reads an answer body (see resultFromBody); line reads a line of
	// a Batch API output or error file, and a 200's body with it in the
	// same pass (see readOutputLine). Both read it into the endpoint's
	// answerBody with goccy/go-json, which decodes in half the time of
	// encoding/json: the decode was a tenth of a synchronous call's CPU,
	// and collecting --via batch's output is bound by it.
	body func(body []byte) (answerBody, error)
	line func(line []byte) (outputLine, error)
}

// endpoints are the endpoints, by jsonl.Endpoint*.
var endpoints = map[string]*endpoint{
	jsonl.EndpointChat:       &chatEndpoint,
	jsonl.EndpointResponses:  &responsesEndpoint,
	jsonl.EndpointEmbeddings: &embeddingsEndpoint,
}

// endpointFor is the endpoint named name; an unknown one is chat.
func endpointFor(name string) *endpoint {
	if e, ok := endpoints[name]; ok {
		return e
	}
	return &chatEndpoint
}

// decodeBody reads an answer body as a B.
func decodeBody[B any, P interface {
	*B
	answerBody
}](body []byte) (answerBody, error) {
	p := P(new(B))
	if err := gojson.Unmarshal(body, p); err != nil {
		return nil, err
	}
	return p, nil
}

// outputLineOf is the JSON of an output line whose response body is a B.
type outputLineOf[B any] struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int `json:"status_code"`
		Body       B   `json:"body"`
	} `json:"response"`
	Error *outputError `json:"error"`
}

// decodeLine reads an output line whose 200 body is a B, in one pass. A
// line it cannot read so (an error, a body that is no answer) is read
// again with its body kept whole.
func decodeLine[B any, P interface {
	*B
	answerBody
}](line []byte) (outputLine, error) {
	var l outputLineOf[B]
	if gojson.Unmarshal(line, &l) == nil && l.Response != nil && l.Response.StatusCode == http.StatusOK {
		return outputLine{customID: l.CustomID, status: http.StatusOK, answer: P(&l.Response.Body)}, nil
	}
	var raw outputLineOf[json.RawMessage]
	if err := gojson.Unmarshal(line, &raw); err != nil {
		return outputLine{}, err
	}
	o := outputLine{customID: raw.CustomID, err: raw.Error}
	if raw.Response != nil {
		o.status, o.body = raw.Response.StatusCode, raw.Response.Body
	}
	return o, nil
}

// lineResult is a line's result with its share of an answer: its usage and
// the cost of it at price.
func (it *item) lineResult(model string, u jsonl.Usage, price budget.Price) *jsonl.Result {
	res := &jsonl.Result{
		ID:       it.req.ID,
		Line:     it.req.Line,
		Model:    model,
		Attempts: it.attempts,
		Metadata: it.req.Metadata,
		Usage:    &u,
		CostUSD:  []byte("null"),
	}
	if it.priced {
		res.CostUSD = price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens).AppendJSON(nil)
	}
	return res
}

// priceFor is the per-token price of an answer that names model (a
// dated snapshot, say), says it was served on serviceTier, and had a
// prompt of promptTokens: the answered model's own price when the table
// lists it, else the line's (budget.Prices.ForAnswer); through the Batch
// API its prices, else the tier's the API billed (flex, priority), long
// context included. An answer served at priority to a model whose
// priority price is unknown is at its standard price.
func (it *item) priceFor(model, serviceTier string, promptTokens int64) budget.Price {
	if !it.priced {
		return budget.Price{}
	}
	t := it.tier
	if t != budget.TierBatch {
		t = budget.TierOf(serviceTier)
	}
	if p, ok := it.prices.ForAnswer(it.price, model).Rates(t, promptTokens); ok {
		return p
	}
	if p, ok := it.price.Rates(t, promptTokens); ok {
		return p
	}
	p, _ := it.price.Rates(budget.TierStandard, promptTokens)
	return p
}

// callCost is the cost of a call's usage at price; 0 when the price is
// unknown.
func (it *item) callCost(u jsonl.Usage, price budget.Price) budget.Cost {
	if !it.priced {
		return 0
	}
	return price.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
}

// isSet reports whether a raw JSON field is there and not null.
func isSet(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// cmpRaw is raw, or JSON null for a field that is not there.
func cmpRaw(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return []byte("null")
	}
	return raw
}
