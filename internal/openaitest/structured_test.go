package openaitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	openai "github.com/sashabaranov/go-openai"
)

// extraction is a schema of the kind extraction runs use, every keyword
// the fake says it follows: nested objects, a $defs reference, a nullable
// field, an enum, bounds, formats, an array with minItems.
const extraction = `{"type":"object","properties":{
	"name":{"type":"string","minLength":3,"maxLength":40},
	"age":{"type":"integer","minimum":18,"maximum":99},
	"score":{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1},
	"member":{"type":"boolean"},
	"email":{"type":["string","null"],"format":"email"},
	"born":{"type":"string","format":"date"},
	"sentiment":{"type":"string","enum":["positive","neutral","negative"]},
	"tags":{"type":"array","items":{"type":"string"},"minItems":3,"maxItems":5},
	"address":{"$ref":"#/$defs/address"},
	"kind":{"anyOf":[{"type":"null"},{"const":"person"}]}},
	"required":["name","age","score","member","email","born","sentiment","tags","address","kind"],
	"additionalProperties":false,
	"$defs":{"address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"integer"}},"required":["city","zip"],"additionalProperties":false}}}`

// compileSchema compiles a schema with santhosh-tekuri/jsonschema itself,
// formats asserted: a check that owes nothing to gptbatch's own.
func compileSchema(t *testing.T, doc string) *jsonschema.Schema {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("mem://schema.json", v); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("mem://schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fits reports whether text is one JSON value that s accepts, and why not.
func fits(s *jsonschema.Schema, text string) error {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// structuredAnswer is what a test reads of an answer to a schema.
type structuredAnswer struct {
	content, refusal, finish string
	prompt, completion       int
}

// answerOf is what a test reads of resp, a chat answer to a schema.
func answerOf(resp response) structuredAnswer {
	ch := resp.Choices[0]
	a := structuredAnswer{finish: ch.FinishReason, prompt: resp.Usage.PromptTokens, completion: resp.Usage.CompletionTokens}
	if ch.Message.Content != nil {
		a.content = *ch.Message.Content
	}
	if ch.Message.Refusal != nil {
		a.refusal = *ch.Message.Refusal
	}
	return a
}

// askChat sends prompt to chat completions with doc as its json_schema.
func askChat(t *testing.T, s *Server, doc, prompt string) structuredAnswer {
	t.Helper()
	body := fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":400,"messages":[{"role":"user","content":%q}],"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":%s}}}`, prompt, doc)
	r := post(t, s, "", body)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var resp response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	return answerOf(resp)
}

// askResponses sends prompt to /v1/responses with doc as its text.format.
func askResponses(t *testing.T, s *Server, doc, prompt string) structuredAnswer {
	t.Helper()
	body := fmt.Sprintf(`{"model":"gpt-4o-mini","max_output_tokens":400,"input":%q,"text":{"format":{"type":"json_schema","name":"x","strict":true,"schema":%s}}}`, prompt, doc)
	r := do(t, http.MethodPost, s.URL()+"/responses", "", body)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var resp struct {
		Status            string `json:"status"`
		IncompleteDetails *struct {
			Reason string `json:"reason"`
		} `json:"incomplete_details"`
		Output []struct {
			Content []struct {
				Type    string `json:"type"`
				Text    string `json:"text"`
				Refusal string `json:"refusal"`
			} `json:"content"`
		} `json:"output"`
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	a := structuredAnswer{finish: "stop", prompt: resp.Usage.InputTokens, completion: resp.Usage.OutputTokens}
	if resp.Status == "incomplete" && resp.IncompleteDetails.Reason == "max_output_tokens" {
		a.finish = "length"
	}
	for _, o := range resp.Output {
		for _, c := range o.Content {
			a.content += c.Text
			a.refusal += c.Refusal
		}
	}
	return a
}

// TestStructuredAnswersFit: an answer to a json_schema request fits the
// schema, through chat completions and the Responses API, by a validator
// of its own; its tokens are counted, and the schema's are billed in the
// prompt.
func TestStructuredAnswersFit(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	check := compileSchema(t, extraction)
	enc, _ := o200kEncoder()
	for name, ask := range map[string]func(*testing.T, *Server, string, string) structuredAnswer{"chat": askChat, "responses": askResponses} {
		t.Run(name, func(t *testing.T) {
			for i := range 20 {
				prompt := fmt.Sprintf("Extract the person in review %d: Ada, 36, from London", i)
				a := ask(t, s, extraction, prompt)
				if err := fits(check, a.content); err != nil || a.finish != "stop" {
					t.Fatalf("answer %q (finish %s) does not fit: %v", a.content, a.finish, err)
				}
				if want := len(enc.tk.EncodeOrdinary(a.content)); a.completion != want {
					t.Errorf("completion tokens %d, want %d", a.completion, want)
				}
			}
			plain := askChatPlain(t, s, "Extract the person in review 0: Ada, 36, from London")
			withSchema := askChat(t, s, extraction, "Extract the person in review 0: Ada, 36, from London")
			if got, want := withSchema.prompt-plain, formatTokens(enc, json.RawMessage(extraction)); got != want || want < 50 {
				t.Errorf("the schema adds %d prompt tokens, want %d", got, want)
			}
		})
	}
}

// askChatPlain sends prompt to chat completions with no format.
func askChatPlain(t *testing.T, s *Server, prompt string) int {
	t.Helper()
	r := post(t, s, "", fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":400,"messages":[{"role":"user","content":%q}]}`, prompt))
	var resp response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Usage.PromptTokens
}

// TestStructuredInvalidAnswers: with InvalidRate, a share of first answers
// is invalid in each of the four ways, the same prompts whatever the order
// they come in, and the prompt's next answer fits; "__invalid__" is never
// answered validly.
func TestStructuredInvalidAnswers(t *testing.T) {
	t.Parallel()
	check := compileSchema(t, extraction)
	const n = 100 // seed 7 makes 30 of their first answers invalid, 5 to 11 of each kind
	cfg := Config{Seed: 7, Structured: StructuredConfig{InvalidRate: 0.25}}
	invalidIn := func(order []int) map[int]string {
		s := newServer(t, cfg)
		bad := map[int]string{}
		for _, i := range order {
			a := askChat(t, s, extraction, fmt.Sprintf("review %d", i))
			var why string
			switch {
			case a.refusal != "":
				why = "refused"
			case a.finish == "length":
				why = "truncated"
			case json.Valid([]byte(a.content)):
				if fits(check, a.content) != nil {
					why = "type"
				}
			default:
				why = "not JSON"
			}
			if why == "" {
				continue
			}
			bad[i] = why
			if again := askChat(t, s, extraction, fmt.Sprintf("review %d", i)); fits(check, again.content) != nil || again.finish != "stop" {
				t.Errorf("review %d asked again: %q (finish %s), want an answer that fits", i, again.content, again.finish)
			}
		}
		if st := s.Structured(); st.Invalid[InvalidNotJSON]+st.Invalid[InvalidType]+st.Invalid[InvalidTruncated]+st.Invalid[InvalidRefused] != len(bad) {
			t.Errorf("Structured() = %+v, want %d invalid", st, len(bad))
		}
		return bad
	}
	forward, backward := make([]int, n), make([]int, n)
	for i := range n {
		forward[i], backward[i] = i, n-1-i
	}
	a, b := invalidIn(forward), invalidIn(backward)
	if len(a) < n/8 || len(a) > n*3/8 {
		t.Errorf("%d of %d first answers invalid, want about a quarter", len(a), n)
	}
	kinds := map[string]int{}
	for i, why := range a {
		kinds[why]++
		if b[i] != why {
			t.Errorf("review %d: %q one run, %q in the other order", i, why, b[i])
		}
	}
	if len(kinds) != 4 || len(a) != len(b) {
		t.Errorf("kinds %v (%d and %d invalid), want all four, the same in both orders", kinds, len(a), len(b))
	}

	s := newServer(t, Config{})
	for range 3 {
		if a := askResponses(t, s, extraction, "always __invalid__"); fits(check, a.content) == nil {
			t.Errorf("__invalid__ answered %q, which fits", a.content)
		}
	}
}

// TestStructuredFormatRefused: a json_schema format without its name or
// schema is the API's 400.
func TestStructuredFormatRefused(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	for _, f := range []string{
		`{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}`,
		`{"type":"json_schema","json_schema":{"name":"x"}}`,
		`{"type":"json_schema"}`,
		`{"type":"xml"}`,
	} {
		r := post(t, s, "", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"response_format":`+f+`}`)
		if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("response_format")) {
			t.Errorf("response_format %s: status %d %s, want a 400 naming it", f, r.status, r.body)
		}
	}
}

// TestStructuredBatchAnswersAsSync: batch lines held to a schema are
// answered by the generator that answers synchronous requests: with the
// same seed, the same prompts get the same answers, invalid ones alike, and
// a line asked again in a later batch is answered validly.
func TestStructuredBatchAnswersAsSync(t *testing.T) {
	t.Parallel()
	const n = 120
	cfg := Config{Seed: 7, Structured: StructuredConfig{InvalidRate: 0.25}}
	chatBody := func(prompt string) string {
		return fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":400,"messages":[{"role":"user","content":%q}],"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":%s}}}`, prompt, compact(json.RawMessage(extraction)))
	}
	batchOf := func(s *Server, prompts []string) map[string]structuredAnswer {
		t.Helper()
		c := client(s, "k")
		var in bytes.Buffer
		for i, p := range prompts {
			fmt.Fprintf(&in, `{"custom_id":"q%d","method":"POST","url":"/v1/chat/completions","body":%s}`+"\n", i, chatBody(p))
		}
		ctx := context.Background()
		f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: in.Bytes(), Purpose: openai.PurposeBatch})
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions})
		if err != nil {
			t.Fatal(err)
		}
		s.FinishBatches()
		got := map[string]structuredAnswer{}
		for _, l := range content(t, c, retrieve(t, c, b.ID).OutputFileID) {
			var resp response
			if err := json.Unmarshal(l.Response.Body, &resp); err != nil {
				t.Fatal(err)
			}
			a := answerOf(resp)
			var i int
			fmt.Sscanf(l.CustomID, "q%d", &i)
			got[prompts[i]] = a
		}
		if len(got) != len(prompts) {
			t.Fatalf("batch answered %d lines, want %d", len(got), len(prompts))
		}
		return got
	}
	prompts := make([]string, n)
	for i := range prompts {
		prompts[i] = fmt.Sprintf("review %d", i)
	}
	sync, batch := newServer(t, cfg), newServer(t, cfg)
	got := batchOf(batch, prompts)
	check := compileSchema(t, extraction)
	var again []string
	for _, p := range prompts {
		want := askChat(t, sync, extraction, p)
		if a := got[p]; a != want {
			t.Errorf("%s: batch answered %+v, synchronously %+v", p, a, want)
		}
		if a := got[p]; a.refusal != "" || a.finish != "stop" || fits(check, a.content) != nil {
			again = append(again, p)
		}
	}
	if len(again) < n/8 || len(again) > n*3/8 {
		t.Fatalf("%d of %d batch answers invalid, want about a quarter", len(again), n)
	}
	if st, want := batch.Structured(), sync.Structured(); st.Answered != want.Answered || !maps.Equal(st.Invalid, want.Invalid) {
		t.Errorf("Structured() after the batch = %+v, after the same requests synchronously %+v", st, want)
	}
	for p, a := range batchOf(batch, again) {
		if a.finish != "stop" || fits(check, a.content) != nil {
			t.Errorf("%s asked again in a second batch: %q (finish %s), want an answer that fits", p, a.content, a.finish)
		}
	}
}
