package cli

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// msgHandler writes log records as gptbatch's other messages are written:
// "gptbatch: warning: ..." for a warning, "gptbatch: error: ..." for an
// error, "gptbatch: ..." for --verbose events, then the attributes as
// key=value.
type msgHandler struct {
	w     *msgWriter
	level slog.Level
	attrs string // preformatted " key=value" pairs of WithAttrs
}

// newLogger is the logger for messages on w at level and above.
func newLogger(w *msgWriter, level slog.Level) *slog.Logger {
	return slog.New(&msgHandler{w: w, level: level})
}

func (h *msgHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *msgHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("gptbatch: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, a)
		return true
	})
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *msgHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, a)
	}
	return &msgHandler{w: h.w, level: h.level, attrs: b.String()}
}

// WithGroup is h: gptbatch's messages name their keys in full.
func (h *msgHandler) WithGroup(string) slog.Handler { return h }

// appendAttr writes " key=value", the value quoted when it has spaces or
// quotes in it.
func appendAttr(b *strings.Builder, a slog.Attr) {
	if a.Equal(slog.Attr{}) {
		return
	}
	v := a.Value.Resolve().String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteString(" " + a.Key + "=" + v)
}

// msgWriter is stderr for gptbatch's messages: one message at a time, and
// above the progress line while one is drawn (see progressBar.Above).
type msgWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (m *msgWriter) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.w.Write(b)
}

// set sends later messages to w.
func (m *msgWriter) set(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.w = w
}
