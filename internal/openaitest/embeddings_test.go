package openaitest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

func TestEmbeddingsGoOpenAI(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	ctx := context.Background()
	inputs := []string{"hello world", "foo", "hello world again"}

	float, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequestStrings{Input: inputs, Model: openai.SmallEmbedding3})
	if err != nil {
		t.Fatalf("CreateEmbeddings(float): %v", err)
	}
	if len(float.Data) != len(inputs) {
		t.Fatalf("len(Data) = %d, want %d", len(float.Data), len(inputs))
	}
	for i, d := range float.Data {
		want := EmbeddingVector("text-embedding-3-small", inputs[i], 0)
		if d.Index != i || len(d.Embedding) != 1536 || !slices.Equal(d.Embedding, want) {
			t.Errorf("Data[%d] = index %d, %d floats, want index %d, EmbeddingVector(%q) of 1536", i, d.Index, len(d.Embedding), i, inputs[i])
		}
	}
	// cl100k_base: hello, " world" | foo | hello, " world", " again".
	if u := float.Usage; u.PromptTokens != 6 || u.TotalTokens != 6 || u.CompletionTokens != 0 {
		t.Errorf("Usage = %+v, want 6 prompt, 6 total", u)
	}
	if string(float.Model) != "text-embedding-3-small" {
		t.Errorf("Model = %q, want text-embedding-3-small", float.Model)
	}

	b64, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequestStrings{Input: inputs, Model: openai.SmallEmbedding3, EncodingFormat: openai.EmbeddingEncodingFormatBase64})
	if err != nil {
		t.Fatalf("CreateEmbeddings(base64): %v", err)
	}
	for i := range inputs {
		if !slices.Equal(b64.Data[i].Embedding, float.Data[i].Embedding) {
			t.Errorf("base64 Data[%d] differs from its float vector", i)
		}
	}

	// The same text as tokens gets the same vector.
	enc, _ := cl100kEncoder()
	toks, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequestTokens{Input: [][]int{enc.tk.EncodeOrdinary("foo")}, Model: openai.SmallEmbedding3})
	if err != nil {
		t.Fatalf("CreateEmbeddings(tokens): %v", err)
	}
	if !slices.Equal(toks.Data[0].Embedding, float.Data[1].Embedding) || toks.Usage.PromptTokens != 1 {
		t.Errorf("tokens of \"foo\" = %d tokens, a different vector, want 1 token, the vector of \"foo\"", toks.Usage.PromptTokens)
	}

	short, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequestStrings{Input: inputs[:1], Model: openai.LargeEmbedding3, Dimensions: 256})
	if err != nil {
		t.Fatalf("CreateEmbeddings(dimensions 256): %v", err)
	}
	v := short.Data[0].Embedding
	var norm float64
	for _, f := range v {
		norm += float64(f) * float64(f)
	}
	if len(v) != 256 || math.Abs(norm-1) > 1e-4 {
		t.Errorf("dimensions 256: %d floats of norm %v, want 256 of norm 1", len(v), math.Sqrt(norm))
	}

	e := s.Endpoint(PathEmbeddings)
	if e.Requests != 4 || e.Succeeded != 4 || e.Inputs != 3+3+1+1 || e.Base64 != 1 || e.Float != 3 || e.PromptTokens != 6+6+1+2 {
		t.Errorf("Endpoint(embeddings) = %+v, want 4 requests, 4 succeeded, 8 inputs, 1 base64, 3 float, 15 prompt tokens", e)
	}
	if got := s.Endpoint(PathChat).Requests; got != 0 {
		t.Errorf("Endpoint(chat).Requests = %d, want 0", got)
	}
}

func TestEmbeddingsWire(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	r := do(t, "POST", s.URL()+"/embeddings", "", `{"model":"text-embedding-3-small","input":"hi","encoding_format":"base64"}`)
	var resp struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string `json:"object"`
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &resp); r.status != 200 || err != nil {
		t.Fatalf("post = %d %s (%v)", r.status, r.body, err)
	}
	// 1536 float32s are 6144 bytes, 8192 in base64.
	if resp.Object != "list" || resp.Data[0].Object != "embedding" || len(resp.Data[0].Embedding) != 8192 {
		t.Errorf("base64 body = %s %s, %d characters, want list, embedding, 8192 characters", resp.Object, resp.Data[0].Object, len(resp.Data[0].Embedding))
	}
	wantHeaders(t, r, map[string]string{"openai-model": "text-embedding-3-small", "Content-Type": "application/json"})
}

func TestEmbeddingsLimits(t *testing.T) {
	t.Parallel()
	tokens := func(n, each int) string {
		arrays := make([]string, n)
		one := "[" + strings.TrimSuffix(strings.Repeat("1,", each), ",") + "]"
		for i := range arrays {
			arrays[i] = one
		}
		return "[" + strings.Join(arrays, ",") + "]"
	}
	strs := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`"x",`, n), ",") + "]"
	}
	tests := []struct {
		name, input string
		status      int
		typ, code   string
		prefix      string
	}{
		{"2048 inputs", strs(2048), 200, "", "", ""},
		{"2049 inputs", strs(2049), 400, "invalid_request_error", "array_above_max_length", "Invalid 'input': array too long. Expected an array with maximum length 2048, but got an array with length 2049 instead."},
		{"8192 tokens", tokens(1, 8192), 200, "", "", ""},
		{"8193 tokens", tokens(1, 8193), 400, "invalid_request_error", "", "This model's maximum context length is 8192 tokens, however you requested 8193 tokens (8193 in your prompt; 0 for the completion)."},
		{"8193 tokens of text", `"` + strings.Repeat(" a", 8193) + `"`, 400, "invalid_request_error", "", "This model's maximum context length is 8192 tokens, however you requested 8193 tokens"},
		{"300,001 tokens", tokens(60, 5000)[:len(tokens(60, 5000))-1] + ",[1]]", 400, "max_tokens_per_request", "max_tokens_per_request", "Requested 300001 tokens, max 300000 tokens per request"},
		{"empty string", `""`, 400, "invalid_request_error", "", "'$.input' is invalid."},
		{"empty array", `[]`, 400, "invalid_request_error", "empty_array", "[] is too short - 'input'"},
		{"mixed", `["a",1]`, 400, "invalid_request_error", "", "'$.input' is invalid."},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "POST", s.URL()+"/embeddings", "", `{"model":"text-embedding-3-small","dimensions":1,"input":`+tt.input+`}`)
			if r.status != tt.status {
				t.Fatalf("post(%s) = %d %.300s, want %d", tt.name, r.status, r.body, tt.status)
			}
			if tt.status == 200 {
				return
			}
			e := r.apiError(t).Error
			code := ""
			if e.Code != nil {
				code = *e.Code
			}
			if e.Type != tt.typ || code != tt.code || !strings.HasPrefix(e.Message, tt.prefix) {
				t.Errorf("post(%s) = %q %q %q, want %q %q %q...", tt.name, e.Type, code, e.Message, tt.typ, tt.code, tt.prefix)
			}
		})
	}
	others := []struct{ body, param, prefix string }{
		{`{"model":"text-embedding-ada-002","input":"x","dimensions":10}`, "", "This model does not support specifying dimensions."},
		{`{"model":"text-embedding-3-small","input":"x","dimensions":2000}`, "dimensions", "Invalid 'dimensions': integer above maximum value. Expected a value <= 1536"},
		{`{"model":"text-embedding-3-small","input":"x","encoding_format":"int8"}`, "encoding_format", "Invalid value: 'int8'. Supported values are: 'float' and 'base64'."},
		{`{"model":"text-embedding-3-small","input":"x","messages":[]}`, "", "Unrecognized request argument supplied: messages"},
		{`{"model":"text-embedding-3-small"}`, "input", "Missing required parameter: 'input'."},
	}
	for _, tt := range others {
		r := do(t, "POST", s.URL()+"/embeddings", "", tt.body)
		e := r.apiError(t).Error
		param := ""
		if e.Param != nil {
			param = *e.Param
		}
		if r.status != 400 || param != tt.param || !strings.HasPrefix(e.Message, tt.prefix) {
			t.Errorf("post(%s) = %d param %q %q, want 400 param %q %q...", tt.body, r.status, param, e.Message, tt.param, tt.prefix)
		}
	}
}

func TestEmbeddingsRateLimit(t *testing.T) {
	t.Parallel()
	c := newClock()
	s := newServer(t, Config{TPM: 10, Now: c.Now})
	body := `{"model":"text-embedding-3-small","input":["hello world","hello world again"]}` // 5 tokens
	for i, want := range []int{200, 200, 429} {
		r := do(t, "POST", s.URL()+"/embeddings", "", body)
		if r.status != want {
			t.Fatalf("request %d = %d %s, want %d", i+1, r.status, r.body, want)
		}
		if want == 429 {
			wantHeaders(t, r, map[string]string{
				"x-ratelimit-limit-tokens":     "10",
				"x-ratelimit-remaining-tokens": "0",
				"retry-after-ms":               "30000",
			})
			if e := r.apiError(t).Error; e.Code == nil || *e.Code != "rate_limit_exceeded" || e.Type != "tokens" {
				t.Errorf("429 body = %s, want tokens rate_limit_exceeded", r.body)
			}
		}
	}
	c.Advance(30e9)
	if r := do(t, "POST", s.URL()+"/embeddings", "", body); r.status != 200 {
		t.Errorf("after 30s = %d, want 200", r.status)
	}
}

func TestEmbeddingsFailures(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{FailRate: 1, Failures: []Failure{Fail503}})
	r := do(t, "POST", s.URL()+"/embeddings", "", `{"model":"text-embedding-3-small","input":"x"}`)
	if r.status != 503 {
		t.Errorf("FailRate 1 = %d, want 503", r.status)
	}
	s = newServer(t, Config{})
	r = do(t, "POST", s.URL()+"/embeddings", "", `{"model":"text-embedding-3-small","input":["ok","x __status_500__"]}`)
	if r.status != 500 || s.Stats().Injected != 1 {
		t.Errorf("__status_500__ = %d, %d injected, want 500, 1", r.status, s.Stats().Injected)
	}
}

func TestEmbeddingVectorDiffers(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for i := range 50 {
		in := fmt.Sprint("input ", i)
		v := EmbeddingVector("text-embedding-3-small", in, 8)
		k := fmt.Sprint(v)
		if other, ok := seen[k]; ok {
			t.Fatalf("EmbeddingVector(%q) = EmbeddingVector(%q)", in, other)
		}
		seen[k] = in
	}
}
