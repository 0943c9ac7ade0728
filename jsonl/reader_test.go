package jsonl

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
)

func readAll(t *testing.T, in string, opt Options) []*Request {
	t.Helper()
	r := NewReader(strings.NewReader(in), opt)
	var reqs []*Request
	for {
		req, err := r.Next()
		if err == io.EOF {
			return reqs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		reqs = append(reqs, req)
	}
}

func TestForms(t *testing.T) {
	tests := []struct {
		name, in string
		opt      Options
		id       string
		messages string
		fields   map[string]string // other Body fields, raw
		meta     string
	}{
		{"string", `"hi there"`, Options{}, "1", `[{"role":"user","content":"hi there"}]`, nil, ""},
		{"string with --system", `"hi"`, Options{System: "be brief"}, "1", `[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]`, nil, ""},
		{"prompt", `{"id":"q1","prompt":"p","system":"s","temperature":0,"seed":1e400,"prompt_cache_key":"k","metadata":{"a":[1, 2]}}`, Options{System: "ignored"}, "q1",
			`[{"role":"system","content":"s"},{"role":"user","content":"p"}]`, map[string]string{"temperature": "0", "seed": "1e400", "prompt_cache_key": `"k"`}, `{"a":[1, 2]}`},
		{"messages", `{"id":42,"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"tools":[]}`, Options{}, "42",
			`[{"role":"user","content":"x"}]`, map[string]string{"response_format": `{"type":"json_object"}`, "tools": "[]"}, ""},
		{"messages with --system", `{"messages":[{"role":"user","content":"x"}]}`, Options{System: "added"}, "1",
			`[{"role":"system","content":"added"},{"role":"user","content":"x"}]`, nil, ""},
		{"messages with a developer message and --system", `{"messages":[{"role":"developer","content":"d"},{"role":"user","content":"x"}]}`, Options{System: "not added"}, "1",
			`[{"role":"developer","content":"d"},{"role":"user","content":"x"}]`, nil, ""},
		{"batch with --system", `{"custom_id":"b2","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"y"}]}}`, Options{System: "added"}, "b2",
			`[{"role":"system","content":"added"},{"role":"user","content":"y"}]`, nil, ""},
		{"batch with a system message and --system", `{"custom_id":"b3","url":"/v1/chat/completions","body":{"messages":[{"role":"system","content":"own"},{"role":"user","content":"y"}]}}`, Options{System: "not added"}, "b3",
			`[{"role":"system","content":"own"},{"role":"user","content":"y"}]`, nil, ""},
		{"batch", `{"custom_id":"b1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"y"}],"max_tokens":5}}`, Options{}, "b1",
			`[{"role":"user","content":"y"}]`, map[string]string{"model": `"gpt-4o"`, "max_tokens": "5"}, ""},
		{"number id text", `{"id":1.50,"prompt":"p"}`, Options{}, "1.50", `[{"role":"user","content":"p"}]`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := readAll(t, tt.in+"\n", tt.opt)
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Err != nil {
				t.Fatalf("Err = %v", r.Err)
			}
			if r.ID != tt.id {
				t.Errorf("ID = %q, want %q", r.ID, tt.id)
			}
			if string(r.Body["messages"]) != tt.messages {
				t.Errorf("messages = %s, want %s", r.Body["messages"], tt.messages)
			}
			for k, v := range tt.fields {
				if string(r.Body[k]) != v {
					t.Errorf("Body[%s] = %s, want %s", k, r.Body[k], v)
				}
			}
			for _, k := range []string{"id", "custom_id", "metadata", "prompt", "system", "body", "url", "method"} {
				if _, ok := r.Body[k]; ok {
					t.Errorf("Body has %q, which is gptbatch's, not the API's", k)
				}
			}
			if string(r.Metadata) != tt.meta {
				t.Errorf("Metadata = %s, want %s", r.Metadata, tt.meta)
			}
		})
	}
}

func TestBadLines(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"prompt": "unterminated`, "line 1: not valid JSON"},
		{`42`, "must be a JSON string or object, not a number"},
		{`[1,2]`, "not an array"},
		{`null`, "not null"},
		{`{"prompt":"a","messages":[]}`, `exactly one of "prompt", "messages" or "body"`},
		{`{"id":"x"}`, `exactly one of`},
		{`{"prompt":5}`, `"prompt" must be a string`},
		{`{"messages":[]}`, `"messages" is empty`},
		{`{"messages":[{"content":"x"}]}`, `messages[0] has no "role"`},
		{`{"prompt":"x","model":7}`, `"model" must be a non-empty string`},
		{`{"custom_id":"e","url":"/v1/completions","body":{"prompt":"x"}}`, `url "/v1/completions" is not supported`},
		{`{"custom_id":"e","url":"/v1/embeddings","body":{"messages":[{"role":"user","content":"x"}]}}`, `"body" has no "input"`},
		{`{"custom_id":"e","url":"/v1/responses","body":{"prompt":"x"}}`, `"body" has no "input"`},
		{`{"custom_id":"e","prompt":"x","body":{"messages":[{"role":"user","content":"x"}]}}`, `has both "body" (a Batch API line) and "prompt"`},
		{`{"input":"x"}`, `exactly one of "prompt", "messages" or "body"`},
		{"\"bad \xff utf8\"", "not valid UTF-8"},
		{"\"nul \x00 byte\"", "NUL byte"},
		{strings.Repeat("[", 600) + strings.Repeat("]", 600), "nested deeper than 512"},
	}
	for _, tt := range tests {
		reqs := readAll(t, tt.in+"\n", Options{})
		if len(reqs) != 1 || reqs[0].Err == nil || !strings.Contains(reqs[0].Err.Error(), tt.want) {
			var got any = reqs
			if len(reqs) == 1 {
				got = reqs[0].Err
			}
			t.Errorf("Next(%.40q) = %v, want an error containing %q", tt.in, got, tt.want)
		}
	}
}

// TestEndpointForms: what each line form means for --endpoint responses
// and embeddings, and a Batch API line's url choosing its own endpoint.
func TestEndpointForms(t *testing.T) {
	resp := Options{Endpoint: EndpointResponses}
	emb := Options{Endpoint: EndpointEmbeddings}
	tests := []struct {
		name, in string
		opt      Options
		endpoint string
		body     string // the whole body, as JSON with sorted keys
	}{
		{"responses string", `"hi"`, resp, EndpointResponses, `{"input":"hi"}`},
		{"responses string with --system", `"hi"`, Options{Endpoint: EndpointResponses, System: "be brief"}, EndpointResponses, `{"input":"hi","instructions":"be brief"}`},
		{"responses input", `{"id":"r","input":"hi","instructions":"own","temperature":0}`, Options{Endpoint: EndpointResponses, System: "not used"}, EndpointResponses, `{"input":"hi","instructions":"own","temperature":0}`},
		{"responses input with --system", `{"input":[{"role":"user","content":"hi"}]}`, Options{Endpoint: EndpointResponses, System: "sys"}, EndpointResponses, `{"input":[{"content":"hi","role":"user"}],"instructions":"sys"}`},
		{"responses input with a developer item and --system", `{"input":[{"role":"developer","content":"d"},{"role":"user","content":"hi"}]}`, Options{Endpoint: EndpointResponses, System: "sys"}, EndpointResponses, `{"input":[{"content":"d","role":"developer"},{"content":"hi","role":"user"}]}`},
		{"responses prompt and system", `{"prompt":"p","system":"s","max_output_tokens":20}`, resp, EndpointResponses, `{"input":"p","instructions":"s","max_output_tokens":20}`},
		{"responses messages", `{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},{"role":"assistant","content":"a","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}]}`, Options{Endpoint: EndpointResponses, System: "not used"}, EndpointResponses,
			`{"input":[{"content":"s","role":"system"},{"content":[{"text":"look","type":"input_text"},{"detail":"low","image_url":"https://x/y.png","type":"input_image"}],"role":"user"},{"content":"a","role":"assistant"},{"arguments":"{}","call_id":"c1","name":"f","type":"function_call"},{"call_id":"c1","output":"42","type":"function_call_output"}]}`},
		{"embeddings string", `"some text"`, emb, EndpointEmbeddings, `{"input":"some text"}`},
		{"embeddings string ignores --system", `"t"`, Options{Endpoint: EndpointEmbeddings, System: "sys"}, EndpointEmbeddings, `{"input":"t"}`},
		{"embeddings input list", `{"id":"e","input":["a","b"],"dimensions":256,"metadata":{"k":1}}`, emb, EndpointEmbeddings, `{"dimensions":256,"input":["a","b"]}`},
		{"embeddings prompt", `{"prompt":"p","model":"text-embedding-3-large"}`, emb, EndpointEmbeddings, `{"input":"p","model":"text-embedding-3-large"}`},
		{"batch embeddings under chat", `{"custom_id":"b","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":[1,2,3]}}`, Options{System: "sys"}, EndpointEmbeddings, `{"input":[1,2,3],"model":"text-embedding-3-small"}`},
		{"batch responses under embeddings", `{"custom_id":"b","url":"/v1/responses","body":{"model":"gpt-4o-mini","input":"x"}}`, Options{Endpoint: EndpointEmbeddings, System: "sys"}, EndpointResponses, `{"input":"x","instructions":"sys","model":"gpt-4o-mini"}`},
		{"batch chat under responses", `{"custom_id":"b","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}]}}`, resp, EndpointChat, `{"messages":[{"content":"x","role":"user"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := readAll(t, tt.in+"\n", tt.opt)
			if len(reqs) != 1 || reqs[0].Err != nil {
				t.Fatalf("Next(%s) = %+v, want one request", tt.in, reqs[0].Err)
			}
			r := reqs[0]
			if r.Endpoint != tt.endpoint {
				t.Errorf("Endpoint = %q, want %q", r.Endpoint, tt.endpoint)
			}
			var v any
			b, _ := json.Marshal(r.Body)
			json.Unmarshal(b, &v)
			got, _ := json.Marshal(v)
			if string(got) != tt.body {
				t.Errorf("Body = %s, want %s", got, tt.body)
			}
		})
	}
	for _, tt := range []struct {
		name, in string
		opt      Options
		want     string
	}{
		{"embeddings messages", `{"messages":[{"role":"user","content":"x"}]}`, emb, `gives "input" (or "prompt"), not "messages"`},
		{"embeddings both", `{"input":"x","prompt":"y"}`, emb, `exactly one of "input", "prompt" or "body"`},
		{"responses two forms", `{"input":"x","messages":[]}`, resp, `exactly one of "input", "prompt", "messages" or "body"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reqs := readAll(t, tt.in+"\n", tt.opt)
			if len(reqs) != 1 || reqs[0].Err == nil || !strings.Contains(reqs[0].Err.Error(), tt.want) {
				t.Errorf("Next(%s) = %+v, want an error containing %q", tt.in, reqs[0].Err, tt.want)
			}
		})
	}
	// Text and CSV prompts become the endpoint's input.
	for _, tt := range []struct {
		opt  Options
		body string
	}{
		{Options{Format: FormatText, Endpoint: EndpointEmbeddings}, `{"input":"a line"}`},
		{Options{Format: FormatText, Endpoint: EndpointResponses, System: "s"}, `{"input":"a line","instructions":"s"}`},
	} {
		reqs := readAll(t, "a line\n", tt.opt)
		b, _ := json.Marshal(reqs[0].Body)
		if string(b) != tt.body {
			t.Errorf("text line for %s: Body = %s, want %s", tt.opt.Endpoint, b, tt.body)
		}
	}
}

func TestLinesAndIDs(t *testing.T) {
	in := "\"a\"\r\n\n   \n{\"prompt\":\"b\"}\r\n\"c\"" // CRLF, blank lines, no final newline
	reqs := readAll(t, in, Options{})
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, want := range []int{1, 4, 5} {
		if reqs[i].Line != want || reqs[i].ID != strconv.Itoa(want) {
			t.Errorf("request %d: line %d id %q, want %d", i, reqs[i].Line, reqs[i].ID, want)
		}
	}
}

func TestLongLines(t *testing.T) {
	big := `"` + strings.Repeat("x", 17<<20) + `"`
	reqs := readAll(t, big+"\n\"next\"\n", Options{})
	if len(reqs) != 2 || reqs[0].Err != nil || reqs[1].Line != 2 {
		t.Fatalf("17 MiB line: %d requests, first err %v", len(reqs), reqs[0].Err)
	}
	reqs = readAll(t, `"`+strings.Repeat("y", 2000)+"\"\n\"after\"\n", Options{MaxLine: 1000})
	if len(reqs) != 2 || reqs[0].Err == nil || !strings.Contains(reqs[0].Err.Error(), "line 1: longer than 1000 bytes") {
		t.Fatalf("over MaxLine: %+v", reqs[0].Err)
	}
	if reqs[1].Err != nil || reqs[1].Line != 2 || string(reqs[1].Body["messages"]) != `[{"role":"user","content":"after"}]` {
		t.Errorf("line after the long one = %+v", reqs[1])
	}
}

func TestHugeLineIsRefused(t *testing.T) {
	// Just over the limit: the line is skipped, not held, and the next
	// one is read.
	in := io.MultiReader(strings.NewReader(strings.Repeat("[", 33<<20)), strings.NewReader("\n\"ok\"\n"))
	r := NewReader(in, Options{})
	first, err := r.Next()
	if err != nil || first.Err == nil || !strings.Contains(first.Err.Error(), "longer than 32 MiB") {
		t.Fatalf("33 MiB line: %v, %v", first, err)
	}
	second, err := r.Next()
	if err != nil || second.Err != nil || second.Line != 2 {
		t.Fatalf("line after: %+v, %v", second, err)
	}
}

func TestTextAndCSV(t *testing.T) {
	reqs := readAll(t, "one\n\ntwo, three\n", Options{Format: FormatText})
	if len(reqs) != 2 || reqs[1].ID != "3" || string(reqs[1].Body["messages"]) != `[{"role":"user","content":"two, three"}]` {
		t.Errorf("text = %+v", reqs)
	}
	csv := "lang,prompt,id\nen,\"Hello, world\",q1\nde,\"two\nlines\",q2\nfr,short\nxx,\"p\",\n"
	reqs = readAll(t, csv, Options{Format: FormatCSV})
	if len(reqs) != 4 {
		t.Fatalf("csv: %d requests, want 4", len(reqs))
	}
	if reqs[0].ID != "q1" || string(reqs[0].Metadata) != `{"lang":"en"}` || string(reqs[0].Body["messages"]) != `[{"role":"user","content":"Hello, world"}]` {
		t.Errorf("csv record 1 = %+v", reqs[0])
	}
	if reqs[1].Line != 3 || reqs[1].ID != "q2" {
		t.Errorf("csv record 2: line %d id %q, want 3 q2", reqs[1].Line, reqs[1].ID)
	}
	if reqs[2].Err == nil || reqs[2].Line != 5 {
		t.Errorf("csv record with 2 fields: %+v, want an error on line 5", reqs[2])
	}
	if reqs[3].Err != nil || reqs[3].ID != "6" {
		t.Errorf("csv record with an empty id: %+v, want id = line 6", reqs[3])
	}
	_, err := NewReader(strings.NewReader("text,id\nx,1\n"), Options{Format: FormatCSV}).Next()
	if err == nil || !strings.Contains(err.Error(), `no "prompt" column`) {
		t.Errorf("csv without prompt column: %v", err)
	}
}

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	content := "<b> & </b>"
	w.Write(&Result{ID: "q1", Line: 1, Model: "m", Content: String(content), Usage: &Usage{PromptTokens: 1}, CostUSD: UnknownCost(), Attempts: 1})
	w.Write(&Result{ID: "q2", Line: 2, Error: &Error{Type: ErrInvalidInput, Message: "line 2: bad"}})
	w.Flush()
	want := `{"id":"q1","line":1,"model":"m","content":"<b> & </b>","usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":0,"cached_tokens":0},"cost_usd":null,"attempts":1}
{"id":"q2","line":2,"attempts":0,"error":{"type":"invalid_input","message":"line 2: bad","status":0}}
`
	if b.String() != want {
		t.Errorf("Writer wrote\n%s\nwant\n%s", b.String(), want)
	}
	done, skipped, err := ReadDone(strings.NewReader(want + `{"id":"q3","li`))
	if err != nil || !done.Answered("q1") || done.Answered("q2") || skipped != 1 {
		t.Errorf("ReadDone = %v, %d, %v; want q1 only, 1 skipped", done, skipped, err)
	}
}

// Only real answers count as done for --resume; a file of --dry-run
// estimates is refused rather than taken for finished work.
func TestReadDone(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		ids      string // sorted, comma-separated
		err      string
	}{
		{"answers", `{"id":"a","line":1,"content":"x","usage":{"prompt_tokens":1},"attempts":1}
{"id":"r","line":2,"content":null,"refusal":"no","attempts":1}
{"id":"e","line":3,"embedding":[0.1],"usage":{"prompt_tokens":1}}
{"id":"t","line":4,"tool_calls":[{}],"error":null}
`, "a,e,r,t", ""},
		{"errors are not done", `{"id":"f","line":1,"error":{"type":"server"},"attempts":5}
{"id":"g","line":2,"error":{"type":"budget"},"attempts":0}
`, "", ""},
		{"no answer is not done", `{"id":"h","line":1,"attempts":0}
{"id":"i","line":2}
`, "", ""},
		{"dry run", `{"id":"q1","line":1,"prompt_tokens":9,"max_output_tokens":256,"est_cost_usd":0.0000041}
`, "", "line 1 is a --dry-run estimate"},
		{"dry run with unknown price", `{"id":"q1","line":1,"prompt_tokens":9,"max_output_tokens":256}
`, "", "line 1 is a --dry-run estimate"},
		{"dry run after results", `{"id":"a","line":1,"content":"x","usage":{}}
{"id":"q1","line":1,"prompt_tokens":9,"max_output_tokens":256,"est_cost_usd":0.0000041}
`, "", "line 2 is a --dry-run estimate"},
		{"dry run invalid line", `{"id":"2","line":2,"prompt_tokens":0,"max_output_tokens":0,"error":{"type":"invalid_input"}}
`, "", "line 1 is a --dry-run estimate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done, _, err := ReadDone(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("ReadDone = %v, %v; want an error containing %q", done, err, tt.err)
				}
				return
			}
			var got []string
			for _, id := range []string{"a", "e", "f", "g", "h", "i", "q1", "r", "t"} {
				if done.Answered(id) {
					got = append(got, id)
				}
			}
			if err != nil || strings.Join(got, ",") != tt.ids {
				t.Errorf("ReadDone answered %v, %v; want %s", got, err, tt.ids)
			}
		})
	}
}

// "id": null (what jq's {id, prompt} writes when the source has none) and
// "custom_id": null are no id: the line number names the line.
func TestNullID(t *testing.T) {
	for _, tt := range []struct{ in, id string }{
		{`{"id":null,"prompt":"p"}`, "1"},
		{`{"custom_id":null,"body":{"messages":[{"role":"user","content":"x"}]}}`, "1"},
		{`{"custom_id":"c","id":null,"prompt":"p"}`, "c"},
		{`{"custom_id":null,"id":"i","prompt":"p"}`, "i"},
	} {
		reqs := readAll(t, tt.in+"\n"+tt.in+"\n", Options{})
		if len(reqs) != 2 || reqs[0].Err != nil || reqs[0].ID != tt.id {
			t.Fatalf("Next(%s) = %+v, want id %q", tt.in, reqs[0], tt.id)
		}
		if tt.id == "1" && reqs[1].ID != "2" {
			t.Errorf("Next(%s) on line 2: id %q, want 2", tt.in, reqs[1].ID)
		}
	}
}

// A leading UTF-8 byte order mark is not part of the first line, in every
// format; elsewhere it is content.
func TestBOM(t *testing.T) {
	const bom = "\uFEFF"
	for _, tt := range []struct {
		name, in string
		opt      Options
		id       string
		messages string
	}{
		{"jsonl", bom + `{"id":"q1","prompt":"p"}` + "\n", Options{}, "q1", `[{"role":"user","content":"p"}]`},
		{"jsonl string", bom + `"p"`, Options{}, "1", `[{"role":"user","content":"p"}]`},
		{"text", bom + "hello\n", Options{Format: FormatText}, "1", `[{"role":"user","content":"hello"}]`},
		{"csv", bom + "prompt,id\nhello,q1\n", Options{Format: FormatCSV}, "q1", `[{"role":"user","content":"hello"}]`},
		{"csv id first", bom + "id,prompt\nq1,hello\n", Options{Format: FormatCSV}, "q1", `[{"role":"user","content":"hello"}]`},
		{"text, not leading", "a\n" + bom + "b\n", Options{Format: FormatText}, "1", `[{"role":"user","content":"a"}]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reqs := readAll(t, tt.in, tt.opt)
			if len(reqs) == 0 || reqs[0].Err != nil || reqs[0].ID != tt.id || string(reqs[0].Body["messages"]) != tt.messages {
				t.Fatalf("Next(%q) = %+v, want id %s, messages %s", tt.in, reqs, tt.id, tt.messages)
			}
		})
	}
	if reqs := readAll(t, "a\n"+bom+"b\n", Options{Format: FormatText}); len(reqs) != 2 || !strings.Contains(string(reqs[1].Body["messages"]), bom+"b") {
		t.Errorf("a BOM inside the input was dropped: %+v", reqs)
	}
	if reqs := readAll(t, bom, Options{}); len(reqs) != 0 {
		t.Errorf("Next(BOM only) = %+v, want nothing", reqs)
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("\"a\"\n{\"prompt\":\"b\",\"id\":3}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"c\"}]}\n"))
	f.Add([]byte("{\"custom_id\":\"x\",\"body\":{\"messages\":[{\"role\":\"user\"}]}}\r\n[[[\n\xff\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, format := range []Format{FormatJSONL, FormatText, FormatCSV} {
			r := NewReader(bytes.NewReader(b), Options{Format: format, MaxLine: 4096})
			last := 0
			for {
				req, err := r.Next()
				if err != nil {
					if err != io.EOF && format != FormatCSV {
						t.Fatalf("%s: Next error %v", format, err)
					}
					break
				}
				if req.Line <= last && format != FormatCSV {
					t.Fatalf("%s: line %d after %d", format, req.Line, last)
				}
				last = req.Line
				if (req.Err == nil) == (req.Body == nil) {
					t.Fatalf("%s: line %d: Err %v with Body %v", format, req.Line, req.Err, req.Body)
				}
				if req.Err == nil && req.Body["messages"] == nil {
					t.Fatalf("%s: line %d: no messages", format, req.Line)
				}
			}
		}
	})
}

// A Batch API line's url and the endpoint it names are one table read
// both ways.
func TestEndpointURLs(t *testing.T) {
	for _, tt := range []struct{ endpoint, url string }{
		{EndpointChat, "/v1/chat/completions"},
		{EndpointResponses, "/v1/responses"},
		{EndpointEmbeddings, "/v1/embeddings"},
	} {
		if got := URL(tt.endpoint); got != tt.url {
			t.Errorf("URL(%q) = %q, want %q", tt.endpoint, got, tt.url)
		}
		if got, ok := EndpointOf(tt.url); got != tt.endpoint || !ok {
			t.Errorf("EndpointOf(%q) = %q, %v; want %q", tt.url, got, ok, tt.endpoint)
		}
	}
	if got := URL("completions"); got != "" {
		t.Errorf(`URL("completions") = %q, want ""`, got)
	}
	if got, ok := EndpointOf("/v1/completions"); ok {
		t.Errorf(`EndpointOf("/v1/completions") = %q, true; want none`, got)
	}
}
