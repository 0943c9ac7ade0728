package openaitest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
)

// The embeddings endpoint's limits, as the API enforces them.
const (
	// MaxEmbeddingInputs is the most inputs one request may have.
	MaxEmbeddingInputs = 2048
	// MaxEmbeddingInputTokens is the most tokens one input may have.
	MaxEmbeddingInputTokens = 8192
	// MaxEmbeddingRequestTokens is the most tokens one request may have,
	// all inputs together.
	MaxEmbeddingRequestTokens = 300_000
)

// embeddingDims is the length of a model's vectors; models it does not
// name have 1536, like text-embedding-3-small.
func embeddingDims(model string) int {
	if model == "text-embedding-3-large" {
		return 3072
	}
	return 1536
}

var embeddingParams = map[string]bool{
	"model": true, "input": true, "encoding_format": true, "dimensions": true, "user": true,
}

// embeddingCall is a valid embeddings request.
type embeddingCall struct {
	model  string
	inputs [][]int // the tokens of each input
	texts  []string
	base64 bool
	dims   int // 0 for the model's own
	total  int
}

func (c *embeddingCall) modelName() string { return c.model }
func (c *embeddingCall) charge() int       { return c.total }
func (c *embeddingCall) inputTokens() int  { return c.total }
func (c *embeddingCall) trigger() string   { return strings.Join(c.texts, "\n") }
func (c *embeddingCall) flex() bool        { return false }

func (c *embeddingCall) countIn(e *EndpointStats) {
	e.Inputs += len(c.inputs)
	if c.base64 {
		e.Base64++
	} else {
		e.Float++
	}
}

// The embeddings success body, field for field as the API sends it.
type (
	embeddingResponse struct {
		Object string          `json:"object"`
		Data   []embeddingData `json:"data"`
		Model  string          `json:"model"`
		Usage  embeddingUsage  `json:"usage"`
	}
	embeddingData struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"` // []float32, or a base64 string
	}
	embeddingUsage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	}
)

func (c *embeddingCall) respond(*Server) (any, usage) {
	resp := embeddingResponse{Object: "list", Model: c.model, Data: make([]embeddingData, len(c.inputs))}
	for i, toks := range c.inputs {
		v := vectorOf(c.model, toks, c.dims)
		var e any = v
		if c.base64 {
			b := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		resp.Data[i] = embeddingData{Object: "embedding", Index: i, Embedding: e}
	}
	resp.Usage = embeddingUsage{PromptTokens: c.total, TotalTokens: c.total}
	var u usage
	u.PromptTokens, u.TotalTokens = c.total, c.total
	return resp, u
}

// EmbeddingVector is the vector the server answers for input: a unit
// vector drawn from a hash of model and input's cl100k_base tokens, so the
// same input (as text or as its tokens) always gets the same vector and
// different inputs get different ones. dimensions 0 means the model's own
// length (3072 for text-embedding-3-large, else 1536); a smaller one cuts
// the vector and scales it back to unit length, as the API does.
func EmbeddingVector(model, input string, dimensions int) []float32 {
	enc, err := cl100kEncoder()
	if err != nil {
		panic(err)
	}
	return vectorOf(model, enc.tokens(input), dimensions)
}

func vectorOf(model string, tokens []int, dims int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(model))
	var b [8]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint64(b[:], uint64(t))
		h.Write(b[:])
	}
	seed := h.Sum64()
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	n := embeddingDims(model)
	if dims > 0 && dims < n {
		n = dims
	}
	v := make([]float32, n)
	var sum float64
	for i := range v {
		f := rng.Float64()*2 - 1
		v[i] = float32(f)
		sum += f * f
	}
	norm := math.Sqrt(sum)
	for i := range v {
		v[i] = float32(float64(v[i]) / norm)
	}
	return v
}

// parseEmbeddings parses and validates an embeddings request as the API
// does. Every model's tokens are cl100k_base, the encoding of
// text-embedding-3-small, -large and ada-002.
func (s *Server) parseEmbeddings(body []byte) (call, *apiError) {
	fields, apiErr := parseObject(body, embeddingParams)
	if apiErr != nil {
		return nil, apiErr
	}
	c := &embeddingCall{}
	if raw, ok := fields["model"]; ok && json.Unmarshal(raw, &c.model) != nil {
		return nil, invalidType("model", "a string")
	}
	if c.model == "" {
		return c, invalid("you must provide a model parameter", "", "")
	}
	if raw, ok := fields["encoding_format"]; ok && string(raw) != "null" {
		var f string
		if json.Unmarshal(raw, &f) != nil || (f != "float" && f != "base64") {
			return c, invalid(fmt.Sprintf("Invalid value: %s. Supported values are: 'float' and 'base64'.", quoteRaw(raw)), "encoding_format", "invalid_value")
		}
		c.base64 = f == "base64"
	}
	if raw, ok := fields["dimensions"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &c.dims) != nil {
			return c, invalidType("dimensions", "an integer")
		}
		switch max := embeddingDims(c.model); {
		case c.model == "text-embedding-ada-002":
			return c, invalid("This model does not support specifying dimensions.", "", "")
		case c.dims < 1:
			return c, invalid(fmt.Sprintf("Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got %d instead.", c.dims), "dimensions", "integer_below_min_value")
		case c.dims > max:
			return c, invalid(fmt.Sprintf("Invalid 'dimensions': integer above maximum value. Expected a value <= %d, but got %d instead.", max, c.dims), "dimensions", "integer_above_max_value")
		}
	}
	raw, ok := fields["input"]
	if !ok || string(raw) == "null" {
		return c, invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
	}
	if err := c.parseInput(raw); err != nil {
		return c, err
	}
	if len(c.inputs) > MaxEmbeddingInputs {
		return c, invalid(fmt.Sprintf("Invalid 'input': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", MaxEmbeddingInputs, len(c.inputs)), "input", "array_above_max_length")
	}
	for i, toks := range c.inputs {
		if len(toks) > MaxEmbeddingInputTokens {
			return c, invalid(fmt.Sprintf("This model's maximum context length is %d tokens, however you requested %d tokens (%d in your prompt; 0 for the completion). Please reduce your prompt; or completion length.", MaxEmbeddingInputTokens, len(toks), len(toks)), "", "")
		}
		if c.texts[i] == "" && len(toks) == 0 {
			return c, invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "", "")
		}
		c.total += len(toks)
	}
	if c.total > MaxEmbeddingRequestTokens {
		return c, &apiError{
			Message: fmt.Sprintf("Requested %d tokens, max %d tokens per request", c.total, MaxEmbeddingRequestTokens),
			Type:    "max_tokens_per_request",
			Code:    "max_tokens_per_request",
		}
	}
	if strings.Contains(c.trigger(), "__status_400__") {
		return c, invalid("This request asked for a 400 (__status_400__).", "input", "")
	}
	return c, nil
}

// parseInput reads input: a string, an array of strings, an array of
// tokens, or an array of token arrays.
func (c *embeddingCall) parseInput(raw json.RawMessage) *apiError {
	enc, err := cl100kEncoder()
	if err != nil {
		panic(err)
	}
	bad := invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "", "")
	var one string
	if json.Unmarshal(raw, &one) == nil {
		c.texts = []string{one}
		c.inputs = [][]int{enc.tokens(one)}
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return bad
	}
	if len(items) == 0 {
		return invalid("[] is too short - 'input'", "input", "empty_array")
	}
	var tokens []int
	if json.Unmarshal(raw, &tokens) == nil {
		c.texts = []string{""}
		c.inputs = [][]int{tokens}
		return nil
	}
	for _, it := range items {
		var s string
		var toks []int
		switch {
		case json.Unmarshal(it, &s) == nil:
			c.texts = append(c.texts, s)
			c.inputs = append(c.inputs, enc.tokens(s))
		case json.Unmarshal(it, &toks) == nil && toks != nil:
			c.texts = append(c.texts, "")
			c.inputs = append(c.inputs, toks)
		default:
			return bad
		}
	}
	return nil
}

// parseObject parses body as a JSON object whose fields are all known, as
// every endpoint does.
func parseObject(body []byte, known map[string]bool) (map[string]json.RawMessage, *apiError) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, &apiError{
			Message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
			Type:    "invalid_request_error",
		}
	}
	for name := range fields {
		if !known[name] {
			return nil, invalid("Unrecognized request argument supplied: "+name, "", "")
		}
	}
	return fields, nil
}

func invalidType(param, want string) *apiError {
	return invalid(fmt.Sprintf("Invalid type for '%s': expected %s, but got something else instead.", param, want), param, "invalid_type")
}

// quoteRaw shows a JSON value in an error message: a string in single
// quotes, anything else as it was sent.
func quoteRaw(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return "'" + s + "'"
	}
	return string(raw)
}
