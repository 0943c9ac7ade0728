package openaitest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newStalledServer is newServer whose every request runs stall between its
// receipt and the decision on its charge, as a slow token count would.
func newStalledServer(t *testing.T, cfg Config, stall func()) *Server {
	t.Helper()
	s := NewUnstarted(cfg)
	s.stall = stall // before the listener starts: no request reads it earlier
	s.ts = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

// The API charges a request against its limits when it arrives; the time
// the fake then takes to count its tokens (the first request to need an
// encoder waits for it to be built) must not move the charge later: a
// client that mirrors the bucket from when it sent the request finds the
// server's bucket where it expects it.
func TestChargedAtReceipt(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, path, body string
	}{
		{"chat", "/chat/completions", hello},
		{"embeddings", "/embeddings", `{"model":"text-embedding-3-small","input":"document 1: a short text to embed"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			var once sync.Once
			// The first request's count takes 10 s.
			s := newStalledServer(t, Config{RPM: 60, Now: c.Now}, func() { once.Do(func() { c.Advance(10 * time.Second) }) })
			r := do(t, http.MethodPost, s.URL()+tt.path, "", tt.body)
			if r.status != 200 {
				t.Fatalf("first request = %d %s, want 200", r.status, r.body)
			}
			// Charged at its receipt: as of then, 59 left, one back in 1 s.
			wantHeaders(t, r, map[string]string{"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"})
			// 10 s after its receipt the bucket is full again: 60 more pass.
			for i := range 60 {
				if r := do(t, http.MethodPost, s.URL()+tt.path, "", tt.body); r.status != 200 {
					t.Fatalf("10 s later, request %d = %d %s, want 200", i+1, r.status, r.body)
				}
			}
			if r := do(t, http.MethodPost, s.URL()+tt.path, "", tt.body); r.status != 429 {
				t.Errorf("10 s later, request 61 = %d, want 429", r.status)
			}
		})
	}
}

// With fixed windows a request counts in the window it arrived in, however
// late its count ends, unless a later window has opened meanwhile: then it
// counts in that one, and the window does not start again.
func TestWindowChargedAtReceipt(t *testing.T) {
	t.Parallel()
	t.Run("decided in the next window", func(t *testing.T) {
		c := newClock()
		var once sync.Once
		// 60 RPM in 10 s windows: 10 a window. The first request arrives
		// at 9 s and its count takes until 11 s.
		s := newStalledServer(t, Config{RPM: 60, Window: 10 * time.Second, Now: c.Now}, func() { once.Do(func() { c.Advance(2 * time.Second) }) })
		c.Advance(9 * time.Second)
		if r := post(t, s, "", hello); r.status != 200 {
			t.Fatalf("at 9 s = %d %s, want 200", r.status, r.body)
		}
		for i := range 10 {
			if r := post(t, s, "", hello); r.status != 200 {
				t.Fatalf("at 11 s, request %d = %d %s, want 200", i+1, r.status, r.body)
			}
		}
		if r := post(t, s, "", hello); r.status != 429 {
			t.Errorf("at 11 s, request 11 = %d, want 429", r.status)
		}
	})
	t.Run("decided after a later window filled", func(t *testing.T) {
		c := newClock()
		stalled, release := make(chan struct{}), make(chan struct{})
		// Not a sync.Once: the others must not wait for the first.
		var first atomic.Bool
		s := newStalledServer(t, Config{RPM: 60, Window: 10 * time.Second, Now: c.Now}, func() {
			if first.CompareAndSwap(false, true) {
				close(stalled)
				<-release
			}
		})
		c.Advance(9 * time.Second)
		late := make(chan error, 1)
		go func() {
			resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(hello))
			if err == nil {
				resp.Body.Close()
			}
			late <- err
		}()
		<-stalled
		// The next window opens and fills while the first is counted.
		c.Advance(2 * time.Second)
		for i := range 10 {
			if r := post(t, s, "", hello); r.status != 200 {
				t.Fatalf("at 11 s, request %d = %d %s, want 200", i+1, r.status, r.body)
			}
		}
		close(release)
		if err := <-late; err != nil {
			t.Fatalf("request from 9 s: %v", err)
		}
		// The window at 10 s keeps its 10.
		if r := post(t, s, "", hello); r.status != 429 {
			t.Errorf("at 11 s, after the request from 9 s was decided, request 11 = %d, want 429", r.status)
		}
	})
}
