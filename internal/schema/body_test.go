package schema

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gptbatch/gptbatch/jsonl"
)

func TestAttachAddsTheFormatAndKeepsEveryOtherByte(t *testing.T) {
	s := mustParse(t, "name, age int")
	chat, resp := string(s.ChatFormat()), string(s.ResponsesFormat())
	tests := []struct {
		name, endpoint, body, want string
	}{
		{"chat", jsonl.EndpointChat,
			`{"model":"gpt-4o-mini", "temperature":0,"messages":[{"role":"user","content":"<b> & é"}]}`,
			`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"<b> & é"}],"response_format":` + chat + `}`},
		{"chat with its own format", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_object"}}`,
			`{"messages":[],"response_format":{"type":"json_object"}}`},
		{"responses", jsonl.EndpointResponses,
			`{"input":"hi","store":false}`,
			`{"input":"hi","store":false,"text":{"format":` + resp + `}}`},
		{"responses with other text fields", jsonl.EndpointResponses,
			`{"input":"hi","text":{"verbosity":"low"},"store":false}`,
			`{"input":"hi","text":{"verbosity":"low","format":` + resp + `},"store":false}`},
		{"responses with its own format", jsonl.EndpointResponses,
			`{"input":"hi","text":{"format":{"type":"text"}}}`,
			`{"input":"hi","text":{"format":{"type":"text"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Attach(tt.endpoint, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Attach(%s) =\n%s\nwant\n%s", tt.body, got, tt.want)
			}
		})
	}
	if _, err := s.Attach(jsonl.EndpointEmbeddings, []byte(`{"input":"x"}`)); !errors.Is(err, ErrNoSchemaField) {
		t.Errorf("Attach(embeddings) error = %v, want ErrNoSchemaField", err)
	}
}

func TestFromBodyReadsALinesOwnFormat(t *testing.T) {
	tests := []struct {
		name, endpoint, body string
		wantSchema           string // "" for none
		wantName             string
		wantHas              bool
		wantStrict           bool
		wantErr              string
	}{
		{"chat json_schema", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":` + personSchema + `}}}`,
			personSchema, "person", true, true, ""},
		{"chat json_schema, not strict", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{"type":"object"}}}}`,
			`{"type":"object"}`, "person", true, false, ""},
		{"chat json_object", jsonl.EndpointChat, `{"messages":[],"response_format":{"type":"json_object"}}`, "", "", true, false, ""},
		{"chat without a format", jsonl.EndpointChat, `{"messages":[]}`, "", "", false, false, ""},
		{"responses text.format", jsonl.EndpointResponses,
			`{"input":"x","text":{"format":{"type":"json_schema","name":"p","strict":true,"schema":` + personSchema + `}}}`,
			personSchema, "p", true, true, ""},
		{"responses text without a format", jsonl.EndpointResponses, `{"input":"x","text":{"verbosity":"low"}}`, "", "", false, false, ""},
		{"a schema that does not compile", jsonl.EndpointChat,
			`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"integr"}}}}`,
			"", "", true, false, "response_format: not a valid JSON Schema: at /type:"},
		{"json_schema without a schema", jsonl.EndpointResponses,
			`{"input":"x","text":{"format":{"type":"json_schema","name":"p"}}}`,
			"", "", true, false, "text.format: json_schema format has no schema"},
		{"a body that is not an object", jsonl.EndpointChat, `[1]`, "", "", false, false, "not a JSON object"},
	}
	var c Cache
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own, has, err := c.FromBody(tt.endpoint, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("FromBody error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if has != tt.wantHas {
				t.Errorf("FromBody hasFormat = %v, want %v", has, tt.wantHas)
			}
			if tt.wantSchema == "" {
				if own != nil {
					t.Errorf("FromBody = %s, want no schema", own.JSON())
				}
				return
			}
			if own == nil || string(own.JSON()) != tt.wantSchema || own.Name() != tt.wantName || own.Strict() != tt.wantStrict {
				t.Fatalf("FromBody = %+v, want %s named %q strict %v", own, tt.wantSchema, tt.wantName, tt.wantStrict)
			}
		})
	}
}

// 10,000 lines with the same inline schema compile it once.
func TestCacheCompilesASchemaOnce(t *testing.T) {
	var c Cache
	body := []byte(`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"p","strict":true,"schema":` + personSchema + `}}}`)
	got := make([]*Schema, 10000)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(got); i += 8 {
				s, _, err := c.FromBody(jsonl.EndpointChat, body)
				if err != nil {
					t.Error(err)
					return
				}
				got[i] = s
			}
		})
	}
	wg.Wait()
	for i, s := range got {
		if s != got[0] {
			t.Fatalf("line %d's schema is another compilation than line 0's", i)
		}
	}
}

func TestCacheHoldsABoundedNumber(t *testing.T) {
	var c Cache
	for i := range 3 * cacheSize {
		body := fmt.Sprintf(`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"p%d","schema":{"type":"object"}}}}`, i)
		if _, _, err := c.FromBody(jsonl.EndpointChat, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.entries) != cacheSize || len(c.order) != cacheSize {
		t.Errorf("after %d schemas the cache holds %d (order %d), want %d", 3*cacheSize, len(c.entries), len(c.order), cacheSize)
	}
}

// TestCacheKeepsCountsOfABoundedNumber: a batch of many different
// schemas counted (not compiled, as a line held to nothing is) keeps the
// counts of the last cacheSize, however many there were.
func TestCacheKeepsCountsOfABoundedNumber(t *testing.T) {
	var c Cache
	for i := range 3 * cacheSize {
		body := fmt.Sprintf(`{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object","description":"%d"}}}}`, i)
		for _, key := range []string{"a", "b"} {
			if n := c.FormatTokens(jsonl.EndpointChat, []byte(body), key, func(s string) int { return len(s) }); n == 0 {
				t.Fatalf("FormatTokens(%s) = 0, want the schema's count", body)
			}
		}
	}
	if len(c.entries) != cacheSize || len(c.order) != cacheSize {
		t.Errorf("after %d schemas the cache holds %d (order %d), want %d", 3*cacheSize, len(c.entries), len(c.order), cacheSize)
	}
}

func TestResolve(t *testing.T) {
	flag := mustParse(t, "name, age int")
	own := `{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"own","schema":{"type":"object"}}}}`
	tests := []struct {
		name     string
		flag     *Schema
		endpoint string
		body     string
		wantBody string
		wantHeld string // the held schema's name; "" for none
		wantErr  bool
	}{
		{"no --schema: as it is, unchecked", nil, jsonl.EndpointChat, `{"messages":[]}`, `{"messages":[]}`, "", false},
		{"the flag's schema added", flag, jsonl.EndpointChat, `{"messages":[]}`, `{"messages":[],"response_format":` + string(flag.ChatFormat()) + `}`, "output", false},
		{"the line's own schema wins", flag, jsonl.EndpointChat, own, own, "own", false},
		{"the line's own json_object: unchecked", flag, jsonl.EndpointChat, `{"messages":[],"response_format":{"type":"json_object"}}`, `{"messages":[],"response_format":{"type":"json_object"}}`, "", false},
		{"embeddings", flag, jsonl.EndpointEmbeddings, `{"input":"x"}`, "", "", true},
	}
	var c Cache
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, held, err := Resolve(tt.flag, &c, tt.endpoint, []byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Resolve error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if string(body) != tt.wantBody {
				t.Errorf("Resolve body =\n%s\nwant\n%s", body, tt.wantBody)
			}
			name := ""
			if held != nil {
				name = held.Name()
			}
			if name != tt.wantHeld {
				t.Errorf("Resolve held %q, want %q", name, tt.wantHeld)
			}
		})
	}
}

// TestCacheKeepsFieldCountsOfABoundedNumber: a batch of many different
// tool sets keeps the counts of the last cacheSize, however many there
// were, and counts each once a key while it is kept.
func TestCacheKeepsFieldCountsOfABoundedNumber(t *testing.T) {
	var c Cache
	counted := 0
	for i := range 3 * cacheSize {
		tools := fmt.Sprintf(`[{"type":"function","function":{"name":"f%d"}}]`, i)
		for range 2 {
			for _, key := range []string{"a", "b"} {
				n, err := c.Tokens("tools", []byte(tools), key, func() (int64, error) { counted++; return int64(len(tools)), nil })
				if err != nil || n != int64(len(tools)) {
					t.Fatalf("Tokens(%s) = %d, %v, want %d", tools, n, err, len(tools))
				}
			}
		}
	}
	if counted != 2*3*cacheSize {
		t.Errorf("%d tool sets counted %d times for two keys, want %d", 3*cacheSize, counted, 2*3*cacheSize)
	}
	if len(c.entries) != cacheSize || len(c.order) != cacheSize {
		t.Errorf("after %d tool sets the cache holds %d (order %d), want %d", 3*cacheSize, len(c.entries), len(c.order), cacheSize)
	}
}

// TestCacheKeepsWhatIsUsed: a schema (or tool set) used on every line
// stays in the cache however many others come and go between its uses:
// it is compiled and counted once, not again every cacheSize others.
func TestCacheKeepsWhatIsUsed(t *testing.T) {
	var c Cache
	used := []byte(`{"name":"r","schema":{"type":"object"}}`)
	first := c.entry(formatKey, used)
	for i := range 5 * cacheSize {
		c.entry("tools", fmt.Appendf(nil, `[{"type":"function","function":{"name":"f%d"}}]`, i))
		if e := c.entry(formatKey, used); e != first {
			t.Fatalf("after %d other entries, the schema used on every line was dropped", i+1)
		}
	}
	if len(c.entries) > cacheSize || len(c.order) != len(c.entries) {
		t.Errorf("%d entries, %d in order; want at most %d, the same", len(c.entries), len(c.order), cacheSize)
	}
}
