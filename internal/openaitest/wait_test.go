package openaitest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// WaitArrivals and WaitInFlight return as the requests arrive and leave,
// and with ctx's error when it ends first.
func TestWait(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	s := newServer(t, Config{Hang: hang})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 3
	done := make(chan struct{}, n)
	for range n {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := http.Post(s.URL()+"/chat/completions", "application/json",
				strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"__hang__"}]}`))
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	if err := s.WaitArrivals(ctx, n); err != nil {
		t.Fatalf("WaitArrivals(%d) = %v", n, err)
	}
	if err := s.WaitInFlight(ctx, n); err != nil {
		t.Fatalf("WaitInFlight(%d) = %v", n, err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := s.WaitArrivals(short, n+1); err != context.Canceled {
		t.Errorf("WaitArrivals(%d) with a cancelled ctx = %v, want context.Canceled", n+1, err)
	}
	close(hang)
	if err := s.WaitInFlight(ctx, 0); err != nil {
		t.Fatalf("WaitInFlight(0) = %v", err)
	}
	for range n {
		<-done
	}
	if st := s.Stats(); st.Requests != n || st.Succeeded != n {
		t.Errorf("Stats = %d requests, %d succeeded; want %d, %d", st.Requests, st.Succeeded, n, n)
	}
}
