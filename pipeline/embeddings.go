package pipeline

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/jsonl"
)

// embeddingsEndpoint is the embeddings API, /v1/embeddings.
var embeddingsEndpoint = endpoint{
	what:    "embeddings",
	resolve: (*item).resolveEmbeddings,
	call: func(ctx context.Context, c *openai.Client, model string) error {
		_, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequest{Model: openai.EmbeddingModel(model)})
		return err
	},
	body: newBody[embeddingList],
	line: decodeLine[embeddingList],
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
	ans := answer{usage: u, model: l.Model}
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
			ans.results = append(ans.results, &jsonl.Result{
				ID: m.req.ID, Line: m.req.Line, Model: l.Model, Attempts: m.attempts, Metadata: m.req.Metadata,
				Usage:     &jsonl.Usage{PromptTokens: shares[i], TotalTokens: shares[i], InputOnly: true},
				Embedding: vecs[i],
			})
		}
		return ans, nil
	}
	res := &jsonl.Result{ID: it.req.ID, Line: it.req.Line, Model: l.Model, Attempts: it.attempts, Metadata: it.req.Metadata, Usage: &u}
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
