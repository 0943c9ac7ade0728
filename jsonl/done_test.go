package jsonl

import (
	"strconv"
	"strings"
	"testing"
)

// Done.Skip finds a line by its id, wherever it moved in the input,
// except twins (ids the output gives to several lines, or a second line
// of an id the output answered on another line): those are found by id
// and line, so that the twin that failed is sent again.
func TestDoneSkip(t *testing.T) {
	const ok, failed = `"content":"x","usage":{}`, `"error":{"type":"server"}`
	res := func(id string, line int, body string) string {
		return `{"id":"` + id + `","line":` + strconv.Itoa(line) + `,` + body + "}\n"
	}
	for _, tt := range []struct {
		name  string
		out   string
		id    string
		line  int
		first bool
		skip  bool
	}{
		{"answered", res("a", 3, ok), "a", 3, true, true},
		{"moved", res("a", 3, ok), "a", 1, true, true},
		{"failed", res("a", 3, failed), "a", 3, true, false},
		{"failed, then answered by a resume", res("a", 3, failed) + res("a", 3, ok), "a", 3, true, true},
		{"twin answered", res("1", 1, ok) + res("1", 5, failed), "1", 1, true, true},
		{"twin failed", res("1", 1, ok) + res("1", 5, failed), "1", 5, false, false},
		{"twin failed first", res("1", 1, failed) + res("1", 5, ok), "1", 1, true, false},
		{"twin with no result", res("1", 1, ok), "1", 5, false, false},
		{"no line", `{"id":"a",` + ok + "}\n", "a", 7, false, true},
		{"not in the output", res("a", 3, ok), "b", 3, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _, err := ReadDone(strings.NewReader(tt.out))
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Skip(tt.id, tt.line, tt.first); got != tt.skip {
				t.Errorf("Skip(%q, %d, first %v) after %q = %v, want %v", tt.id, tt.line, tt.first, tt.out, got, tt.skip)
			}
		})
	}
	var none *Done
	if none.Skip("a", 1, true) {
		t.Error("a nil Done skips a line")
	}
}
