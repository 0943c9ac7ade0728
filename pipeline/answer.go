package pipeline

import (
	"encoding/json"
	"fmt"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/retry"
	"github.com/gptbatch/gptbatch/jsonl"
)

// answer is what an endpoint answered, read for the item it answers.
type answer struct {
	// results are the lines' results, in input order: the line's own, or
	// a pack's, one a member. Each has its usage and cost; the caller adds
	// the latency.
	results []*jsonl.Result
	usage   jsonl.Usage // the call's, as the API reported it
	model   string      // the model that answered, as the API names it
	cost    budget.Cost // the call's cost; 0 when the model's price is unknown
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

// resultFromBody reads body, the answer it.endpoint gave with HTTP status
// status to the request of it (a line, or a pack of them), into the
// lines' results. A status outside 2xx is the API's error, returned as an
// *openai.APIError (or *openai.RequestError for a body that is no error
// object) for retry.Classify; a 2xx body that cannot be read as an answer is an
// error too. Costs are at the tier the answer says it was billed at
// (priceFor); an item of the Batch API's (tier TierBatch) is at its
// prices.
func resultFromBody(it *item, status int, body []byte) (answer, error) {
	if status < 200 || status >= 300 {
		return answer{}, retry.APIError(status, body)
	}
	d := endpointFor(it.endpoint)
	b, err := d.body(body)
	if err != nil {
		return answer{}, fmt.Errorf("read %s: %w", d.what, err)
	}
	return b.result(it)
}

// outputLine is a line of a Batch API output or error file.
type outputLine struct {
	customID string
	status   int        // the response's status_code; 0: no response
	answer   answerBody // a 200's body, read as an answer; nil if it is none
	// body is the response's body, kept whole when answer is nil: an
	// error object, or a 200 that is no answer.
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

// result reads the line's answer into it's results, as resultFromBody
// reads a synchronous one.
func (o *outputLine) result(it *item) (answer, error) {
	if o.answer != nil {
		return o.answer.result(it)
	}
	return resultFromBody(it, o.status, o.body)
}

// count adds an answer to the run's counters.
func (r *runner) count(it *item, ans answer) {
	u := ans.usage
	r.stats.PromptTokens.Add(u.PromptTokens)
	r.stats.CompletionTokens.Add(u.CompletionTokens)
	r.stats.CachedTokens.Add(u.CachedTokens)
	if it.priced {
		r.stats.Cost.Add(int64(ans.cost))
	} else {
		r.stats.Unpriced.Add(1)
	}
}
