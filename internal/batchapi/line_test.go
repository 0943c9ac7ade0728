package batchapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCustomID: a line's first try is line-N; a line asked again carries
// the hash of its original request and its tries in its custom_id, which
// a lost journal's rebuild reads back as the journal recorded them, and
// collecting reads back as line-N and its line. A custom_id that is not
// line-N, or has a carry that is not CustomID's, is no line of gptbatch's.
func TestCustomID(t *testing.T) {
	hash := LineHash("/v1/chat/completions", []byte(`{"model":"gpt-4o-mini"}`))
	tries := &Tries{Reasks: 2, Batches: 3, Answers: 2, PromptTokens: 308, CompletionTokens: 154, CachedTokens: 128, ReasoningTokens: 64, Cost: 71700000}
	tests := []struct {
		name      string
		line      int
		hash      string
		tries     *Tries
		want      string
		wantHash  string
		wantTries json.RawMessage
	}{
		{"first try", 17, "", nil, "line-17", "", nil},
		{"first try, its hash given", 17, hash, nil, "line-17", "", nil},
		{"asked again", 17, hash, tries, "line-17." + hash + ".2.3.2.308.154.128.64.71700000", hash, tries.JSON()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := CustomID(tt.line, tt.hash, tt.tries)
			if id != tt.want {
				t.Fatalf("CustomID(%d, %q, %+v) = %q, want %q", tt.line, tt.hash, tt.tries, id, tt.want)
			}
			if gotID, line, ok := LineOf(id); gotID != "line-17" || line != 17 || !ok {
				t.Errorf("LineOf(%q) = %q, %d, %v; want line-17, 17, true", id, gotID, line, ok)
			}
			gotID, gotHash, gotTries, err := parseCustomID(id)
			if err != nil || gotID != "line-17" || gotHash != tt.wantHash || string(gotTries) != string(tt.wantTries) {
				t.Errorf("parseCustomID(%q) = %q, %q, %s, %v; want line-17, %q, %s", id, gotID, gotHash, gotTries, err, tt.wantHash, tt.wantTries)
			}
		})
	}
	// A custom_id CustomID does not write names no line, however much of
	// one it looks like: a foreign or mangled line of an output file is
	// not taken for a line's answer.
	mangled := []string{"line-3.abc", "line-3.", "line-03", "line-+3", "line-0", "line--3", "line-3.x.y",
		"line-3." + hash, "line-3." + hash + ".1.2", "line-3." + hash + ".1.2.3.4.5.6.7.x", "line-3." + hash + ".1.2.3.4.5.6.7.8.9",
		"line-3." + hash + ".1.2.3.4.5.6.7.08", "line-3." + hash + ".1.2.3.4.5.6.7.", "line-3." + hash[1:] + "*.1.2.3.4.5.6.7.8"}
	for _, foreign := range append([]string{"q7", "q7.line-3", "line-x", "line-"}, mangled...) {
		if id, _, ok := LineOf(foreign); ok || !strings.HasPrefix(foreign, id) {
			t.Errorf("LineOf(%q) = %q, _, %v; want a prefix of it, false", foreign, id, ok)
		}
	}
	for _, bad := range []string{"line-3.abc", "line-3." + hash + ".1.2", "line-3." + hash + ".1.2.3.4.5.6.7.x"} {
		if _, _, _, err := parseCustomID(bad); err == nil {
			t.Errorf("parseCustomID(%q): no error, want one", bad)
		}
	}
}

// TestInputLineLen: a dry run sizes a line's batch file by InputLineLen,
// which is the length of the line InputLine writes for it, whatever the
// id, url and body: ones that need escaping, long ones, invalid UTF-8.
func TestInputLineLen(t *testing.T) {
	tests := []struct {
		name, id, url, body string
	}{
		{"first try", "line-17", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`},
		{"asked again", CustomID(17, LineHash("/v1/responses", []byte("{}")), &Tries{Reasks: 1, Cost: 71700000}), "/v1/responses", `{}`},
		{"quotes and backslashes", `a"b\c`, `/v1/"x"\y`, `{"content":"say \"hi\"\\n"}`},
		{"control characters", "a\tb\nc\x00d\x7f", "/v1/\r\n", "{\"content\":\"\\u0000\\t\"}"},
		{"unicode", "naïve café ☕ 東京", "/v1/embeddings?q=é", `{"input":"naïve café ☕ 東京 \u2028"}`},
		{"invalid UTF-8", "\xff\xfe id", "/v1/\xc3", "{\"input\":\"\xff\"}"},
		{"longer than the buffer", strings.Repeat(`"é\n`, 100), "/v1/" + strings.Repeat("x", 200), strings.Repeat("y", 10000)},
		{"empty", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := len(InputLine(tt.id, tt.url, []byte(tt.body)))
			if got := InputLineLen(tt.id, tt.url, []byte(tt.body)); got != want {
				t.Errorf("InputLineLen(%q, %q, %q) = %d, want %d, len(InputLine(...))", tt.id, tt.url, tt.body, got, want)
			}
		})
	}
}
