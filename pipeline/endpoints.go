package pipeline

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"

	gojson "github.com/goccy/go-json"
	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/budget"
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
}

// errNoChoices is an answer with nothing in it.
var errNoChoices = errors.New("response has no choices")

// answerBody is an endpoint's answer body, decoded: result reads it into
// the results of the item (a line, or a pack of them) it answers. Each
// endpoint has one (chatCompletion, response, embeddingList), and reading
// it is the one way an answer becomes a result, whichever route it came
// by: resultFromBody for an answer body, readOutputLine for a line of a
// Batch API output file.
type answerBody interface {
	result(it *item) (answer, error)
}

// decoder reads an endpoint's answers into its answerBody with
// goccy/go-json, which decodes them in half the time of encoding/json:
// the decode was a tenth of a synchronous call's CPU, and collecting
// --via batch's output is bound by it.
type decoder struct {
	what string // what the answer is called, for errors
	// body reads an answer body.
	body func(body []byte) (answerBody, error)
	// line reads a line of a Batch API output or error file, and a 200's
	// body with it in the same pass.
	line func(line []byte) (outputLine, error)
}

// decoders are the endpoints' decoders, by jsonl.Endpoint*.
var decoders = map[string]decoder{
	jsonl.EndpointChat:       {"chat completion", decodeBody[chatCompletion], decodeLine[chatCompletion]},
	jsonl.EndpointResponses:  {"response", decodeBody[response], decodeLine[response]},
	jsonl.EndpointEmbeddings: {"embeddings", decodeBody[embeddingList], decodeLine[embeddingList]},
}

// decoderOf is endpoint's decoder; an unknown endpoint is chat.
func decoderOf(endpoint string) decoder {
	if d, ok := decoders[endpoint]; ok {
		return d
	}
	return decoders[jsonl.EndpointChat]
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

// resultFromBody reads body, the answer it.endpoint gave with HTTP status
// status to the request of it (a line, or a pack of them), into the
// lines' results. A status outside 2xx is the API's error, returned as an
// *openai.APIError (or *openai.RequestError for a body that is no error
// object) for classify; a 2xx body that cannot be read as an answer is an
// error too. Costs are at the tier the answer says it was billed at
// (priceFor); an item of the Batch API's (tier TierBatch) is at its
// prices.
func resultFromBody(it *item, status int, body []byte) (answer, error) {
	if status < 200 || status >= 300 {
		return answer{}, apiError(status, body)
	}
	d := decoderOf(it.endpoint)
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

// readOutputLine reads a line of the output or error file of a batch of
// endpoint's requests.
func readOutputLine(endpoint string, line []byte) (outputLine, error) {
	return decoderOf(endpoint).line(line)
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

// apiError is the error an error body says, as go-openai makes it.
func apiError(status int, body []byte) error {
	var er openai.ErrorResponse
	if err := json.Unmarshal(body, &er); err != nil || er.Error == nil {
		return &openai.RequestError{HTTPStatus: http.StatusText(status), HTTPStatusCode: status, Err: err, Body: body}
	}
	er.Error.HTTPStatusCode = status
	er.Error.HTTPStatus = http.StatusText(status)
	return er.Error
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

// chatCompletion is the part of a chat completion gptbatch keeps.
type chatCompletion struct {
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		TotalTokens         int64 `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
	ServiceTier string `json:"service_tier"`
}

// chatChoice is one of a chat completion's choices.
type chatChoice struct {
	Index   int `json:"index"`
	Message struct {
		Content   *string         `json:"content"`
		Refusal   *string         `json:"refusal"`
		ToolCalls json.RawMessage `json:"tool_calls"`
	} `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// result reads a chat completion. The first choice is the content
// (JSON null with a refusal, left out when it is only tool calls); with
// n > 1 every choice's content is in choices, and logprobs, when asked
// for, are the choice's or, with n > 1, one a choice.
func (c *chatCompletion) result(it *item) (answer, error) {
	if len(c.Choices) == 0 {
		return answer{}, errNoChoices
	}
	slices.SortStableFunc(c.Choices, func(a, b chatChoice) int { return a.Index - b.Index })
	u := jsonl.Usage{
		PromptTokens:     c.Usage.PromptTokens,
		CompletionTokens: c.Usage.CompletionTokens,
		TotalTokens:      c.Usage.TotalTokens,
		CachedTokens:     c.Usage.PromptTokensDetails.CachedTokens,
		ReasoningTokens:  c.Usage.CompletionTokensDetails.ReasoningTokens,
	}
	price := it.priceFor(c.Model, c.ServiceTier, u.PromptTokens)
	res := it.lineResult(c.Model, u, price)
	first := c.Choices[0]
	msg := first.Message
	hasTools := isSet(msg.ToolCalls) && string(msg.ToolCalls) != "[]"
	switch {
	case msg.Refusal != nil && *msg.Refusal != "":
		res.Content, res.Refusal = []byte("null"), msg.Refusal
	case msg.Content != nil:
		res.Content = jsonl.String(*msg.Content)
	case !hasTools:
		res.Content = []byte("null")
	}
	if hasTools {
		res.ToolCalls = msg.ToolCalls
	}
	res.FinishReason = first.FinishReason
	if len(c.Choices) > 1 {
		res.Choices = make([]*string, len(c.Choices))
		for i, ch := range c.Choices {
			if ch.Message.Refusal == nil || *ch.Message.Refusal == "" {
				res.Choices[i] = ch.Message.Content
			}
		}
	}
	var logprobs []json.RawMessage
	asked := false
	for _, ch := range c.Choices {
		asked = asked || isSet(ch.Logprobs)
		logprobs = append(logprobs, cmpRaw(ch.Logprobs))
	}
	switch {
	case !asked:
	case len(logprobs) == 1:
		res.Logprobs = logprobs[0]
	default:
		res.Logprobs = mustJSON(logprobs)
	}
	return answer{results: []*jsonl.Result{res}, usage: u, model: c.Model, cost: it.callCost(u, price)}, nil
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

// response is the part of a Responses API response gptbatch keeps.
type response struct {
	Model  string `json:"model"`
	Status string `json:"status"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []json.RawMessage `json:"output"`
	Usage  struct {
		InputTokens        int64 `json:"input_tokens"`
		InputTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens        int64 `json:"output_tokens"`
		OutputTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
		TotalTokens int64 `json:"total_tokens"`
	} `json:"usage"`
	ServiceTier string `json:"service_tier"`
}

// outputItem is the part of a response's output item gptbatch reads.
type outputItem struct {
	Type    string `json:"type"`
	Content []struct {
		Type     string          `json:"type"`
		Text     string          `json:"text"`
		Refusal  string          `json:"refusal"`
		Logprobs json.RawMessage `json:"logprobs"`
	} `json:"content"`
}

// result reads a Responses API response: content is the concatenated
// output_text, a refusal is refusal with content null, function calls
// are tool_calls, and usage maps input and output tokens to prompt and
// completion tokens.
func (r *response) result(it *item) (answer, error) {
	if r.Status == "failed" {
		msg := "response failed"
		if r.Error != nil {
			msg = fmt.Sprintf("response failed: %s: %s", r.Error.Code, r.Error.Message)
		}
		return answer{}, errors.New(msg)
	}
	u := jsonl.Usage{
		PromptTokens:     r.Usage.InputTokens,
		CompletionTokens: r.Usage.OutputTokens,
		TotalTokens:      r.Usage.TotalTokens,
		CachedTokens:     r.Usage.InputTokensDetails.CachedTokens,
		ReasoningTokens:  r.Usage.OutputTokensDetails.ReasoningTokens,
	}
	price := it.priceFor(r.Model, r.ServiceTier, u.PromptTokens)
	res := it.lineResult(r.Model, u, price)
	var text, refusal bytes.Buffer
	var calls, logprobs []json.RawMessage
	hasText := false
	for _, raw := range r.Output {
		var o outputItem
		if err := gojson.Unmarshal(raw, &o); err != nil {
			return answer{}, fmt.Errorf("read response output: %w", err)
		}
		switch o.Type {
		case "message":
			for _, c := range o.Content {
				switch c.Type {
				case "output_text":
					hasText = true
					text.WriteString(c.Text)
					var lp []json.RawMessage
					if json.Unmarshal(c.Logprobs, &lp) == nil {
						logprobs = append(logprobs, lp...)
					}
				case "refusal":
					refusal.WriteString(c.Refusal)
				}
			}
		case "function_call", "custom_tool_call":
			calls = append(calls, raw)
		}
	}
	switch {
	case refusal.Len() > 0 && !hasText:
		s := refusal.String()
		res.Content, res.Refusal = []byte("null"), &s
	case hasText || len(calls) == 0:
		res.Content = jsonl.String(text.String())
	}
	if len(calls) > 0 {
		res.ToolCalls = mustJSON(calls)
	}
	if len(logprobs) > 0 {
		res.Logprobs = mustJSON(logprobs)
	}
	switch {
	case r.Status == "incomplete" && r.IncompleteDetails != nil && r.IncompleteDetails.Reason == "max_output_tokens":
		res.FinishReason = "length"
	case r.Status == "incomplete" && r.IncompleteDetails != nil:
		res.FinishReason = r.IncompleteDetails.Reason
	case len(calls) > 0:
		res.FinishReason = "tool_calls"
	default:
		res.FinishReason = "stop"
	}
	return answer{results: []*jsonl.Result{res}, usage: u, model: r.Model, cost: it.callCost(u, price)}, nil
}

// embeddingList is an embeddings answer.
type embeddingList struct {
	Model string `json:"model"`
	Data  []struct {
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int64 `json:"prompt_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
}

// result reads an embeddings answer: a single input's vector is
// embedding, a list's are embeddings, in input order; a pack's members
// each get their own vector and their share of the usage, split exactly
// by each input's own token count.
func (l *embeddingList) result(it *item) (answer, error) {
	vecs := make([]json.RawMessage, len(l.Data))
	for _, d := range l.Data {
		if d.Index < 0 || d.Index >= len(vecs) || vecs[d.Index] != nil {
			return answer{}, fmt.Errorf("read embeddings: index %d out of place among %d", d.Index, len(vecs))
		}
		v, err := it.vector(d.Embedding)
		if err != nil {
			return answer{}, fmt.Errorf("read embeddings: vector %d: %w", d.Index, err)
		}
		vecs[d.Index] = v
	}
	u := jsonl.Usage{PromptTokens: l.Usage.PromptTokens, TotalTokens: l.Usage.TotalTokens, InputOnly: true}
	price := it.priceFor(l.Model, "", u.PromptTokens)
	ans := answer{usage: u, model: l.Model, cost: it.callCost(u, price)}
	if it.members != nil {
		if len(vecs) != len(it.members) {
			return answer{}, fmt.Errorf("read embeddings: %d vectors for %d inputs", len(vecs), len(it.members))
		}
		own := make([]int64, len(it.members))
		for i, m := range it.members {
			own[i] = m.prompt
		}
		shares := split(u.PromptTokens, own)
		for i, m := range it.members {
			m.attempts = it.attempts
			res := m.lineResult(l.Model, jsonl.Usage{PromptTokens: shares[i], TotalTokens: shares[i], InputOnly: true}, m.priceFor(l.Model, "", u.PromptTokens))
			res.Embedding = vecs[i]
			ans.results = append(ans.results, res)
		}
		return ans, nil
	}
	res := it.lineResult(l.Model, u, price)
	switch {
	case it.single && len(vecs) == 1:
		res.Embedding = vecs[0]
	case it.single || len(vecs) == 0:
		return answer{}, fmt.Errorf("read embeddings: %d vectors for 1 input", len(vecs))
	default:
		res.Embeddings = mustJSON(vecs)
	}
	ans.results = []*jsonl.Result{res}
	return ans, nil
}

// vector is an answer's vector as the result writes it: floats, when
// gptbatch chose base64 on the wire, else as the API sent it.
func (it *item) vector(raw json.RawMessage) (json.RawMessage, error) {
	if !it.floats || len(raw) == 0 || raw[0] != '"' {
		// Floats already (a server that ignores encoding_format), or
		// what the line asked for.
		return raw, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		return nil, fmt.Errorf("not base64 float32s")
	}
	return appendFloats(make([]byte, 0, 11*len(b)/4+2), b)
}

// appendFloats appends the little-endian float32s of b to out as a JSON
// array, each number written as encoding/json writes a float32 (the
// shortest text that reads back as the same float32), without its
// reflection: a vector is thousands of them.
func appendFloats(out, b []byte) (json.RawMessage, error) {
	out = append(out, '[')
	for i := 0; i+4 <= len(b); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
		x := float64(f)
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("vector holds %v", f)
		}
		if i > 0 {
			out = append(out, ',')
		}
		format := byte('f')
		if abs := math.Abs(x); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			format = 'e'
		}
		out = strconv.AppendFloat(out, x, format, -1, 32)
		if n := len(out); format == 'e' && n >= 4 && out[n-4] == 'e' && out[n-3] == '-' && out[n-2] == '0' {
			// 1e-07 as 1e-7, as encoding/json writes it.
			out[n-2] = out[n-1]
			out = out[:n-1]
		}
	}
	return append(out, ']'), nil
}

// split divides total among parts in proportion to weights, exactly:
// when the weights add up to total (a pack's inputs counted as the API
// counts them) each part is its weight; otherwise each gets its share
// rounded down and the largest remainders the tokens left over.
func split(total int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	var sum int64
	for _, w := range weights {
		sum += w
	}
	if sum == total {
		copy(out, weights)
		return out
	}
	if sum <= 0 {
		// Nothing to go by: even shares.
		sum = int64(len(weights))
		weights = slices.Repeat([]int64{1}, len(weights))
	}
	type rem struct {
		i int
		r int64
	}
	rems := make([]rem, len(weights))
	var given int64
	for i, w := range weights {
		// total*w fits: tokens a request are far below 2^31.
		out[i] = total * w / sum
		rems[i] = rem{i, total * w % sum}
		given += out[i]
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for k := 0; given < total; k++ {
		out[rems[k%len(rems)].i]++
		given++
	}
	return out
}
