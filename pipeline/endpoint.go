package pipeline

import (
	"context"
	"encoding/json"
	"net/http"

	gojson "github.com/goccy/go-json"
	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/jsonl"
	openai "github.com/sashabaranov/go-openai"
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
	// call sends the request ctx carries (see rawBodyDoer, in fetch.go)
	// through go-openai, which picks the URL and checks the model.
	call func(ctx context.Context, c *openai.Client, model string) error
	// body is an empty answerBody of the endpoint's, for resultFromBody
	// (fetch.go) to read an answer body into; line reads a line of a
	// Batch API output or error file, and a 200's body with it in the
	// same pass (see readOutputLine). Both read with goccy/go-json, which decodes in
	// half the time of encoding/json: the decode was a tenth of a
	// synchronous call's CPU, and collecting --via batch's output is bound
	// by it.
	body func() answerBody
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

// newBody is an empty B, to read an answer body into.
func newBody[B any, P interface {
	*B
	answerBody
}]() answerBody {
	return P(new(B))
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
// again with its body kept whole, and a 200's body then read alone.
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
	if b := P(new(B)); o.status == http.StatusOK && gojson.Unmarshal(o.body, b) == nil {
		o.answer = b
	}
	return o, nil
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

// answer is what an endpoint answered, read for the item it answers.
type answer struct {
	// results are the lines' results, in input order: the line's own, or
	// a pack's, one a member, each with its usage. The route adds what
	// only it knows: cost_usd (resultFromBody; the collector's parseLine,
	// at the Batch API's prices), and latency_ms (sendLine) or batch_id.
	results []*jsonl.Result
	usage   jsonl.Usage // the call's, as the API reported it
	model   string      // the model that answered, as the API names it
	// serviceTier is the tier the answer says it was served on; "" if none.
	serviceTier string
	// cost is the call's cost, the sum of its results': set by the route
	// that read it, at its prices; 0 when the model's price is unknown.
	cost budget.Cost
	// invalid is, for a line held to a schema, why the answer does not
	// fit it (its result then says invalid_output); nil when it fits or
	// is not checked.
	invalid *invalidAnswer
}

// answerBody is an endpoint's answer body, decoded: result reads it into
// the results of the item (a line, or a pack of them) it answers. Each
// endpoint has one (chatCompletion, response, embeddingList), and reading
// it is the one way an answer becomes a result, whichever route it came
// by: resultFromBody for an answer body, readOutputLine for a line of a
// Batch API output file.
type answerBody interface {
	result(it *item) (answer, error)
}

// outputLine is a line of a Batch API output or error file.
type outputLine struct {
	customID string
	status   int        // the response's status_code; 0: no response
	answer   answerBody // a 200's body, read as an answer; nil if it is none
	// body is the response's body, kept whole when the line could not be
	// read in one pass: an error object, or a 200 that is no answer.
	body json.RawMessage
	err  *outputError // the line's error, in an error file
}

// outputError is the error of a line the Batch API did not send.
type outputError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// readOutputLine reads a line of the output or error file of a batch of
// endpoint's requests.
func readOutputLine(endpoint string, line []byte) (outputLine, error) {
	return endpointFor(endpoint).line(line)
}
