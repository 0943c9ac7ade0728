package budget

import (
	"strings"
	"testing"
)

// TestCommentsKept: comments someone wrote in usage.md survive a rewrite,
// once each, and gptbatch's own header is not doubled.
func TestCommentsKept(t *testing.T) {
	in := State{Date: "2025-01-02", TokensWithinDay: 7}.Format()
	in = append(in, []byte("# team budget: ask Ana before raising\n\n  # indented note\n")...)
	s, err := ParseState(in)
	if err != nil {
		t.Fatalf("ParseState: %v", err)
	}
	s.TokensWithinDay++
	out := string(s.Format())
	for _, c := range []string{"# team budget: ask Ana before raising\n", "# indented note\n"} {
		if n := strings.Count(out, c); n != 1 {
			t.Errorf("Format() has %q %d times, want once:\n%s", c, n, out)
		}
	}
	firstHeader := strings.SplitN(header, "\n", 2)[0]
	if n := strings.Count(out, firstHeader); n != 1 {
		t.Errorf("Format() has the header %d times, want once:\n%s", n, out)
	}
	s2, err := ParseState([]byte(out))
	if err != nil || string(s2.Format()) != out {
		t.Errorf("ParseState(Format()) does not give the same file back (%v):\n%s", err, s2.Format())
	}
}
