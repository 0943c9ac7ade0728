package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/openaitest"
)

// endpointResult is a result line with the fields of every endpoint.
type endpointResult struct {
	ID           string           `json:"id"`
	Line         int              `json:"line"`
	Model        string           `json:"model"`
	Content      json.RawMessage  `json:"content"`
	Refusal      *string          `json:"refusal"`
	Choices      []*string        `json:"choices"`
	FinishReason string           `json:"finish_reason"`
	Logprobs     json.RawMessage  `json:"logprobs"`
	Embedding    []float32        `json:"embedding"`
	Embeddings   [][]float32      `json:"embeddings"`
	Usage        map[string]int64 `json:"usage"`
	CostUSD      json.RawMessage  `json:"cost_usd"`
	Attempts     int              `json:"attempts"`
	Metadata     json.RawMessage  `json:"metadata"`
	Error        *map[string]any  `json:"error"`
}

// estimates reads a dry run's prompt_tokens, by id.
func estimates(t *testing.T, out string) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			ID           string `json:"id"`
			PromptTokens int64  `json:"prompt_tokens"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("estimate %s: %v", l, err)
		}
		m[e.ID] = e.PromptTokens
	}
	return m
}

// costOf is the exact cost_usd of tokens of model's input, as written.
func costOf(t *testing.T, model string, prompt, cached, completion int64) string {
	t.Helper()
	p, ok := budget.PriceOf(model)
	if !ok {
		t.Fatalf("no price for %s", model)
	}
	return p.Cost(prompt, cached, completion).String()
}

// embeddingsBatch is n embeddings lines in every form: a string, an object
// with input, one with prompt, a list of inputs, one with dimensions.
func embeddingsBatch(n int) (in string, ids []string, texts [][]string, dims []int) {
	var b strings.Builder
	for i := range n {
		text := fmt.Sprintf("document %d: the number %d is %s", i, i*i, strings.Repeat("quite ", i%7))
		id := fmt.Sprintf("e%d", i)
		d := 0
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, "%q\n", text)
			id = fmt.Sprint(i + 1)
			texts = append(texts, []string{text})
		case 1:
			fmt.Fprintf(&b, `{"id":%q,"input":%q,"metadata":{"i":%d}}`+"\n", id, text, i)
			texts = append(texts, []string{text})
		case 2:
			fmt.Fprintf(&b, `{"id":%q,"prompt":%q}`+"\n", id, text)
			texts = append(texts, []string{text})
		case 3:
			fmt.Fprintf(&b, `{"id":%q,"input":[%q,"second of %d"]}`+"\n", id, text, i)
			texts = append(texts, []string{text, fmt.Sprintf("second of %d", i)})
		default:
			d = 256
			fmt.Fprintf(&b, `{"id":%q,"input":%q,"dimensions":256}`+"\n", id, text)
			texts = append(texts, []string{text})
		}
		ids = append(ids, id)
		dims = append(dims, d)
	}
	return b.String(), ids, texts, dims
}

// TestEmbeddings: 120 embeddings lines in every form come back in order
// with their vectors (base64 on the wire, floats in the result) and exact
// costs, and a dry run counts exactly the tokens the API counted.
func TestEmbeddings(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Latency: 2 * time.Millisecond, Jitter: 20 * time.Millisecond, Seed: 3, Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in, ids, texts, dims := embeddingsBatch(120)
	const model = "text-embedding-3-small"

	out, stderr, code := g.run(context.Background(), in, "--endpoint", "embeddings", "--parallel", "8")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[endpointResult](t, out)
	if len(rs) != 120 {
		t.Fatalf("%d results, want 120", len(rs))
	}
	var total int64
	for i, r := range rs {
		if r.ID != ids[i] || r.Line != i+1 || r.Error != nil {
			t.Fatalf("result %d: id %q line %d error %v, want %q line %d", i, r.ID, r.Line, r.Error, ids[i], i+1)
		}
		want := make([][]float32, len(texts[i]))
		for j, text := range texts[i] {
			want[j] = openaitest.EmbeddingVector(model, text, dims[i])
		}
		if len(want) == 1 {
			if !slices.Equal(r.Embedding, want[0]) || r.Embeddings != nil {
				t.Errorf("result %d: embedding of %d floats, embeddings %d; want the input's vector (%d floats)", i, len(r.Embedding), len(r.Embeddings), len(want[0]))
			}
		} else if len(r.Embeddings) != len(want) || !slices.Equal(r.Embeddings[0], want[0]) || !slices.Equal(r.Embeddings[1], want[1]) || r.Embedding != nil {
			t.Errorf("result %d: embeddings of %d vectors, want %d in input order", i, len(r.Embeddings), len(want))
		}
		if _, ok := r.Usage["completion_tokens"]; ok || r.Usage["prompt_tokens"] == 0 || r.Usage["total_tokens"] != r.Usage["prompt_tokens"] {
			t.Errorf("result %d: usage %v, want prompt_tokens and total_tokens only", i, r.Usage)
		}
		if c := costOf(t, model, r.Usage["prompt_tokens"], 0, 0); string(r.CostUSD) != c {
			t.Errorf("result %d: cost_usd %s, want %s", i, r.CostUSD, c)
		}
		if i%5 == 1 && string(r.Metadata) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("result %d: metadata %s", i, r.Metadata)
		}
		total += r.Usage["prompt_tokens"]
	}
	st := srv.Endpoint(openaitest.PathEmbeddings)
	if st.Requests != 120 || st.Base64 != 120 || st.PromptTokens != total {
		t.Errorf("server: %d requests, %d base64, %d tokens; want 120, 120, %d", st.Requests, st.Base64, st.PromptTokens, total)
	}
	if n := srv.Endpoint(openaitest.PathChat).Requests; n != 0 {
		t.Errorf("%d requests went to chat completions", n)
	}

	// The dry run counts what the API counted, line by line.
	dry, stderr, code := g.run(context.Background(), in, "--endpoint", "embeddings", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit status %d: %s", code, stderr)
	}
	est := estimates(t, dry)
	for i, r := range rs {
		if est[r.ID] != r.Usage["prompt_tokens"] {
			t.Errorf("line %d: dry run counts %d tokens, the API %d", i+1, est[r.ID], r.Usage["prompt_tokens"])
		}
	}

	// The ledger records the endpoint.
	f, err := os.Open(filepath.Join(g.dir, "usage.ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	budget.ReadLedger(f, func(e budget.LedgerEntry) error {
		if e.Endpoint != "embeddings" {
			t.Errorf("ledger entry %+v: endpoint %q, want embeddings", e, e.Endpoint)
		}
		n++
		return nil
	})
	if n != 120 {
		t.Errorf("%d ledger entries, want 120", n)
	}
}

// TestEmbeddingLimits: a line over the API's limits is invalid_input
// naming the limit, never sent; a line that asks for floats gets them as
// the API sent them.
func TestEmbeddingLimits(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	many := make([]string, 2049)
	for i := range many {
		many[i] = "x"
	}
	manyJSON, _ := json.Marshal(many)
	in := strings.Join([]string{
		fmt.Sprintf("%q", strings.Repeat("word ", 9000)),
		fmt.Sprintf(`{"input":%s}`, manyJSON),
		`{"input":""}`,
		`{"input":"fine","encoding_format":"float"}`,
	}, "\n") + "\n"
	out, _, code := g.run(context.Background(), in, "--endpoint", "embeddings", "--tpm", "0")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	rs := parseLines[endpointResult](t, out)
	for i, want := range []string{"at most 8192 tokens an input", "at most 2048 inputs a request", "refuses empty inputs"} {
		if rs[i].Error == nil || (*rs[i].Error)["type"] != "invalid_input" || !strings.Contains(fmt.Sprint((*rs[i].Error)["message"]), want) {
			t.Errorf("line %d: error %v, want invalid_input saying %q", i+1, rs[i].Error, want)
		}
	}
	if !slices.Equal(rs[3].Embedding, openaitest.EmbeddingVector("text-embedding-3-small", "fine", 0)) {
		t.Errorf("line 4 (encoding_format float): embedding of %d floats, want the vector", len(rs[3].Embedding))
	}
	if st := srv.Endpoint(openaitest.PathEmbeddings); st.Requests != 1 || st.Float != 1 {
		t.Errorf("server: %d requests (%d float), want only line 4's", st.Requests, st.Float)
	}
}

// TestPack: --pack 100 sends 250 single-input lines in 3 requests, each
// line still its own result, with its own vector, its usage split exactly
// by its own token count and its own cost; a line unlike its neighbours
// (other dimensions) goes apart; a pack's failure is each of its lines'.
func TestPack(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Latency: time.Millisecond})
	defer srv.Close()
	g := newGB(t, srv.URL())
	const model = "text-embedding-3-small"
	var b strings.Builder
	var texts []string
	for i := range 250 {
		texts = append(texts, fmt.Sprintf("item %d %s", i, strings.Repeat("long ", i%13)))
		fmt.Fprintf(&b, `{"id":"p%d","input":%q}`+"\n", i, texts[i])
	}
	in := b.String()
	out, stderr, code := g.run(context.Background(), in, "--endpoint", "embeddings", "--pack", "100", "--parallel", "1")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[endpointResult](t, out)
	if len(rs) != 250 {
		t.Fatalf("%d results, want 250", len(rs))
	}
	dry, _, _ := g.run(context.Background(), in, "--endpoint", "embeddings", "--dry-run")
	est := estimates(t, dry)
	var total int64
	for i, r := range rs {
		if r.ID != fmt.Sprintf("p%d", i) || !slices.Equal(r.Embedding, openaitest.EmbeddingVector(model, texts[i], 0)) {
			t.Fatalf("result %d: id %q, %d floats; want p%d and its own vector", i, r.ID, len(r.Embedding), i)
		}
		if u := r.Usage["prompt_tokens"]; u != est[r.ID] || r.Usage["total_tokens"] != u {
			t.Errorf("result %d: usage %v, want its own %d tokens", i, r.Usage, est[r.ID])
		}
		if c := costOf(t, model, r.Usage["prompt_tokens"], 0, 0); string(r.CostUSD) != c {
			t.Errorf("result %d: cost_usd %s, want %s", i, r.CostUSD, c)
		}
		total += r.Usage["prompt_tokens"]
	}
	st := srv.Endpoint(openaitest.PathEmbeddings)
	// Three full packs, unless the lines were so slow to come that a pack
	// went on after waiting for more (see packLinger).
	if st.Requests < 3 || st.Requests > 5 || st.Inputs != 250 || st.PromptTokens != total {
		t.Errorf("server: %d requests, %d inputs, %d tokens; want 3, 250, %d (the lines' usage adds up)", st.Requests, st.Inputs, st.PromptTokens, total)
	}

	// A line unlike the others ends a pack; one bad input fails its pack.
	in = `"a"` + "\n" + `"b"` + "\n" + `{"input":"c","dimensions":8}` + "\n" + `"d"` + "\n" + `"e __status_400__"` + "\n"
	out, _, code = g.run(context.Background(), in, "--endpoint", "embeddings", "--pack", "10", "--parallel", "1")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	rs = parseLines[endpointResult](t, out)
	for i, r := range rs {
		failed := r.Error != nil && (*r.Error)["type"] == "api" && strings.HasPrefix(fmt.Sprint((*r.Error)["message"]), fmt.Sprintf("line %d: ", i+1))
		if failed != (i >= 3) {
			t.Errorf("line %d: error %v; want an api error naming the line only for lines 4 and 5, packed with the bad input", i+1, r.Error)
		}
	}
	if n := len(rs[2].Embedding); n != 8 {
		t.Errorf("line 3: %d floats, want 8 (its own dimensions)", n)
	}
}

// TestResponses: 60 lines in the four forms go to /v1/responses with
// store false and come back with the answer, usage and cost; the dry run
// counts the input as the API does.
func TestResponses(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{Latency: 2 * time.Millisecond, Jitter: 10 * time.Millisecond, Key: testKey})
	defer srv.Close()
	g := newGB(t, srv.URL())
	var b strings.Builder
	var prompts []string
	for i := range 60 {
		p := fmt.Sprintf("question %d: what is %d squared?", i, i)
		prompts = append(prompts, p)
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "%q\n", p)
		case 1:
			fmt.Fprintf(&b, `{"id":"r%d","input":%q,"instructions":"be brief","temperature":0}`+"\n", i, p)
		case 2:
			fmt.Fprintf(&b, `{"id":"r%d","prompt":%q,"system":"be brief"}`+"\n", i, p)
		default:
			fmt.Fprintf(&b, `{"id":"r%d","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":%q}]}],"max_tokens":100}`+"\n", i, p)
		}
	}
	in := b.String()
	out, stderr, code := g.run(context.Background(), in, "--endpoint", "responses", "--parallel", "8")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[endpointResult](t, out)
	if len(rs) != 60 {
		t.Fatalf("%d results, want 60", len(rs))
	}
	dry, _, _ := g.run(context.Background(), in, "--endpoint", "responses", "--dry-run")
	est := estimates(t, dry)
	for i, r := range rs {
		var content string
		if r.Error != nil || json.Unmarshal(r.Content, &content) != nil || content != "answer: "+prompts[i] {
			t.Errorf("result %d: content %s error %v, want %q", i, r.Content, r.Error, "answer: "+prompts[i])
			continue
		}
		u := r.Usage
		if u["prompt_tokens"] != est[r.ID] || u["completion_tokens"] == 0 || u["total_tokens"] != u["prompt_tokens"]+u["completion_tokens"] {
			t.Errorf("result %d: usage %v, want prompt_tokens %d (the dry run's)", i, u, est[r.ID])
		}
		if c := costOf(t, "gpt-4o-mini-2024-07-18", u["prompt_tokens"], u["cached_tokens"], u["completion_tokens"]); string(r.CostUSD) != c || r.FinishReason != "stop" || r.Model != "gpt-4o-mini-2024-07-18" {
			t.Errorf("result %d: cost %s finish %q model %q, want %s, stop", i, r.CostUSD, r.FinishReason, r.Model, c)
		}
	}
	st := srv.Endpoint(openaitest.PathResponses)
	if st.Requests != 60 || st.StoreFalse != 60 {
		t.Errorf("server: %d requests, %d with store false; want 60, 60", st.Requests, st.StoreFalse)
	}
	// What reached the API: the forms' instructions and input items, and
	// the output cap as max_output_tokens.
	for _, req := range srv.Requests() {
		var body map[string]json.RawMessage
		json.Unmarshal(req.Body, &body)
		if _, ok := body["max_output_tokens"]; !ok {
			t.Errorf("request %s: no max_output_tokens", req.Body)
		}
	}
}

// TestMixedBatchAPILines: Batch API lines for the three urls, in one
// file, each go to their own endpoint.
func TestMixedBatchAPILines(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	var b strings.Builder
	for i := range 30 {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, `{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"chat %d"}]}}`+"\n", i, i)
		case 1:
			fmt.Fprintf(&b, `{"custom_id":"e%d","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":"embed %d"}}`+"\n", i, i)
		default:
			fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/responses","body":{"model":"gpt-4o-mini","input":"respond %d"}}`+"\n", i, i)
		}
	}
	out, stderr, code := g.run(context.Background(), b.String())
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[endpointResult](t, out)
	for i, r := range rs {
		var content string
		json.Unmarshal(r.Content, &content)
		switch i % 3 {
		case 0:
			if content != fmt.Sprintf("answer: chat %d", i) {
				t.Errorf("line %d: content %q", i+1, content)
			}
		case 1:
			if !slices.Equal(r.Embedding, openaitest.EmbeddingVector("text-embedding-3-small", fmt.Sprintf("embed %d", i), 0)) {
				t.Errorf("line %d: %d floats, want its vector", i+1, len(r.Embedding))
			}
		default:
			if content != fmt.Sprintf("answer: respond %d", i) {
				t.Errorf("line %d: content %q", i+1, content)
			}
		}
	}
	for _, p := range []string{openaitest.PathChat, openaitest.PathEmbeddings, openaitest.PathResponses} {
		if n := srv.Endpoint(p).Requests; n != 10 {
			t.Errorf("%s got %d requests, want 10", p, n)
		}
	}
	// gptbatch usage separates them by model.
	rep, _, code := g.run(context.Background(), "", "usage", "--by", "model", "--json")
	if code != 0 || !strings.Contains(rep, "text-embedding-3-small") || !strings.Contains(rep, "gpt-4o-mini") {
		t.Errorf("usage --by model = %s (exit %d), want both models", rep, code)
	}
}

// TestChoicesLogprobsRefusal: nothing paid for is dropped: every choice
// with n > 1, logprobs when asked for, a refusal as refusal with content
// null.
func TestChoicesLogprobsRefusal(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{})
	defer srv.Close()
	g := newGB(t, srv.URL())
	in := `{"id":"n3","prompt":"three ways","n":3}
{"id":"lp","prompt":"with logprobs","logprobs":true}
{"id":"no","prompt":"please __refusal__"}
{"id":"n2lp","prompt":"two with logprobs","n":2,"logprobs":true}
`
	out, stderr, code := g.run(context.Background(), in)
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	rs := parseLines[endpointResult](t, out)
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4", len(rs))
	}
	n3 := rs[0]
	want := []string{openaitest.ChoiceText("three ways", 0), openaitest.ChoiceText("three ways", 1), openaitest.ChoiceText("three ways", 2)}
	var got []string
	for _, c := range n3.Choices {
		got = append(got, *c)
	}
	if !slices.Equal(got, want) || string(n3.Content) != fmt.Sprintf("%q", want[0]) || n3.Logprobs != nil {
		t.Errorf("n=3: content %s, choices %q, logprobs %s; want %q first and all three in order", n3.Content, got, n3.Logprobs, want)
	}
	var lp struct {
		Content []struct {
			Token string `json:"token"`
		} `json:"content"`
	}
	if err := json.Unmarshal(rs[1].Logprobs, &lp); err != nil || len(lp.Content) == 0 || rs[1].Choices != nil {
		t.Errorf("logprobs: %s (%v), want the choice's logprobs object", rs[1].Logprobs, err)
	}
	if string(rs[2].Content) != "null" || rs[2].Refusal == nil || *rs[2].Refusal != openaitest.RefusalMessage || rs[2].Usage["completion_tokens"] == 0 {
		t.Errorf("refusal: content %s, refusal %v; want null and %q", rs[2].Content, rs[2].Refusal, openaitest.RefusalMessage)
	}
	var two []json.RawMessage
	if err := json.Unmarshal(rs[3].Logprobs, &two); err != nil || len(two) != 2 || len(rs[3].Choices) != 2 {
		t.Errorf("n=2 with logprobs: logprobs %.80s, choices %d; want an array of 2 and 2 choices", rs[3].Logprobs, len(rs[3].Choices))
	}
	// Resume counts a refusal as an answer: it was paid for.
	if code := g.runStreams(context.Background(), append(g.args, "--resume", writeFile(t, g.dir, "prev.jsonl", out)), strings.NewReader(in), new(strings.Builder), new(strings.Builder)); code != 0 {
		t.Errorf("--resume of the finished run: exit status %d", code)
	}
}

// TestFlex: --service-tier flex is sent, priced at half when the answer
// says it ran as flex, and its 429 resource_unavailable is retried
// without counting as a rate limit.
func TestFlex(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(openaitest.Config{FlexUnavailable: 0.3, Seed: 7})
	defer srv.Close()
	g := newGB(t, srv.URL())
	g.seams.Clock = newStepClock() // the retries' back-off takes no time
	out, stderr, code := g.run(context.Background(), prompts(40), "--service-tier", "flex", "--retries", "20", "--parallel", "4")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	st := srv.Endpoint(openaitest.PathChat)
	if st.FlexUnavailable == 0 || st.Flex != 40+st.FlexUnavailable {
		t.Errorf("server: %d flex requests, %d refused; want 40 answered and some refused", st.Flex, st.FlexUnavailable)
	}
	p, _ := budget.PriceOf("gpt-4o-mini-2024-07-18")
	for i, r := range parseLines[endpointResult](t, out) {
		u := r.Usage
		if want := p.Batch().Cost(u["prompt_tokens"], u["cached_tokens"], u["completion_tokens"]).String(); string(r.CostUSD) != want {
			t.Errorf("result %d: cost_usd %s, want %s (half)", i, r.CostUSD, want)
		}
	}
}

// TestStoredConversation: a responses line that continues a conversation
// stored at the API (previous_response_id, conversation) is billed for
// tokens gptbatch cannot count. The run says so once; where a limit must
// bound the batch before sending (--max-cost, --batch-tokens), such a line
// is refused with a budget error that says how to send it, as a line of
// unknown price is under a dollar limit, and the other lines go on.
func TestStoredConversation(t *testing.T) {
	t.Parallel()
	in := `{"id":"a","input":"hello"}
{"id":"b","input":"and then?","previous_response_id":"resp_123"}
{"id":"c","input":"go on","conversation":"conv_456"}
`
	for _, tt := range []struct {
		name    string
		args    []string
		refused []string // the limits the refusal names; none: sent
	}{
		{"no limit", []string{"--batch-tokens", "0"}, nil},
		{"batch tokens", nil, []string{"--batch-tokens"}},
		{"max cost", []string{"--batch-tokens", "0", "--max-cost", "1"}, []string{"--max-cost"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Key: testKey})
			defer srv.Close()
			g := newGB(t, srv.URL()).loud()
			out, stderr, code := g.run(context.Background(), in, append([]string{"--endpoint", "responses"}, tt.args...)...)
			rs := parseLines[endpointResult](t, out)
			if len(rs) != 3 || rs[0].Error != nil {
				t.Fatalf("results %+v (exit %d): want 3, the first answered; stderr: %s", rs, code, stderr)
			}
			if n := strings.Count(stderr, "estimated without the stored conversation"); n != 1 {
				t.Errorf("stderr says %d times that estimates leave the stored conversation out, want once: %s", n, stderr)
			}
			sent := srv.Endpoint(openaitest.PathResponses).Requests
			if tt.refused == nil {
				if code != 0 || sent != 3 || rs[1].Error != nil || rs[2].Error != nil {
					t.Errorf("no limit: exit %d, %d requests, errors %v %v; want 0, 3 and none", code, sent, rs[1].Error, rs[2].Error)
				}
				return
			}
			if code != 1 || sent != 1 {
				t.Errorf("exit %d and %d requests, want 1 and only the first line sent", code, sent)
			}
			for i, field := range []string{"previous_response_id", "conversation"} {
				var typ, msg string
				if e := rs[i+1].Error; e != nil {
					typ, _ = (*e)["type"].(string)
					msg, _ = (*e)["message"].(string)
				}
				if typ != "budget" || !strings.Contains(msg, field) || !strings.Contains(msg, "--batch-tokens 0") {
					t.Errorf("line %d: error %q %q, want a budget error naming %s and how to send it", i+2, typ, msg, field)
					continue
				}
				for _, l := range tt.refused {
					if !strings.Contains(msg, l) {
						t.Errorf("line %d: %q does not name %s", i+2, msg, l)
					}
				}
			}
		})
	}
}

// TestFunctionCallAnswersKept: an answer to the deprecated functions is a
// call in message.function_call, paid for like any answer; its result has
// it in tool_calls, as a tool call's is, on both routes.
func TestFunctionCallAnswersKept(t *testing.T) {
	t.Parallel()
	const fn = `[{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]`
	in := `{"id":"forced","prompt":"weather in Paris?","functions":` + fn + `,"function_call":{"name":"get_weather"}}
{"id":"auto","prompt":"just talk","functions":` + fn + `,"function_call":"auto"}
`
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"synchronous", nil},
		{"via batch", []string{"--via", "batch"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.New(openaitest.Config{})
			defer srv.Close()
			g := newGB(t, srv.URL())
			out, stderr, code := g.run(context.Background(), in, tt.args...)
			if code != 0 {
				t.Fatalf("exit status %d: %s", code, stderr)
			}
			rs := parseLines[map[string]json.RawMessage](t, out)
			if len(rs) != 2 {
				t.Fatalf("%d results, want 2: %s", len(rs), out)
			}
			forced, auto := rs[0], rs[1]
			var calls []struct {
				ID       *string `json:"id"`
				Type     string  `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			}
			if err := json.Unmarshal(forced["tool_calls"], &calls); err != nil || len(calls) != 1 ||
				calls[0].Type != "function" || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != "{}" || calls[0].ID != nil {
				t.Errorf("forced call: tool_calls %s (%v); want the one call get_weather({}), type function, no id", forced["tool_calls"], err)
			}
			if string(forced["finish_reason"]) != `"function_call"` || forced["content"] != nil || forced["cost_usd"] == nil {
				t.Errorf("forced call: finish_reason %s, content %s, cost_usd %s; want function_call, no content (only a call, as for tool calls) and a cost", forced["finish_reason"], forced["content"], forced["cost_usd"])
			}
			if auto["tool_calls"] != nil || string(auto["content"]) == "null" {
				t.Errorf("auto: tool_calls %s, content %s; want text and no call", auto["tool_calls"], auto["content"])
			}
		})
	}
}
