package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/pipeline"
)

// screen is what a terminal shows after s is written to it: \r returns to
// the start of the line, \n starts a new one, ESC [ K erases to the end of
// the line, and other escape sequences draw nothing.
func screen(s string) []string {
	lines := [][]rune{nil}
	col := 0
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		cur := &lines[len(lines)-1]
		switch r := rs[i]; {
		case r == '\r':
			col = 0
		case r == '\n':
			lines = append(lines, nil)
			col = 0
		case r == 0x1b:
			j := i + 1
			for j < len(rs) && !(rs[j] >= 'A' && rs[j] <= 'Z' || rs[j] >= 'a' && rs[j] <= 'z') {
				j++
			}
			if j < len(rs) && rs[j] == 'K' {
				*cur = (*cur)[:min(col, len(*cur))]
			}
			i = j
		default:
			if col < len(*cur) {
				(*cur)[col] = r
			} else {
				*cur = append(*cur, r)
			}
			col++
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimRight(string(l), " ")
	}
	return out
}

// TestProgressAbove: stdout and stderr sharing a terminal, each result
// line stands alone, the progress line is never drawn into the middle of
// one, and it is gone at the end.
func TestProgressAbove(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		writes []string
		want   []string
		drawn  bool // the last draw, at Stop, happens
	}{
		{"whole lines", []string{`{"id":"1"}` + "\n", `{"id":"2"}` + "\n"}, []string{`{"id":"1"}`, `{"id":"2"}`, ""}, true},
		// A buffered writer's chunk may end mid-line.
		{"cut line", []string{`{"id":"1"}` + "\n", `{"id":"2"}` + "\n" + `{"id":"3",`}, []string{`{"id":"1"}`, `{"id":"2"}`, `{"id":"3",`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var term bytes.Buffer // written only under the progressBar's lock
			s := new(pipeline.Stats)
			s.Total.Store(3)
			p := showProgress(&term, s, time.Hour)
			out := p.Above(&term)
			for _, w := range tt.writes {
				io.WriteString(out, w)
				s.Succeeded.Add(1)
			}
			p.Stop() // draws once more, unless a line is cut
			got := screen(term.String())
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("screen = %q, want %q", got, tt.want)
			}
			if drawn := strings.Contains(term.String(), "(2/3)"); drawn != tt.drawn {
				t.Errorf("progress drawn at the end: %v, want %v: %q", drawn, tt.drawn, term.String())
			}
		})
	}
}
