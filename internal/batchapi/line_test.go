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
