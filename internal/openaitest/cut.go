package openaitest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// downloadCut is a fault of file downloads: see CutDownloads.
type downloadCut struct {
	n     int     // downloads left to cut
	frac  float64 // the share of the file sent before the cut
	stall bool    // stall there instead of dropping the connection
	done  int     // downloads cut so far
}

// Cut is how many downloads CutDownloads and StallDownloads have cut so
// far.
func (s *Server) Cut() int {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return s.ext.cut.done
}

// hang is a fault of Files and Batch API calls: see Hang.
type hang struct {
	n            int
	method, path string
	hung         int // calls hung so far
}

// Hang makes the next n Files or Batch API calls of method whose path
// starts with path answer nothing: each holds its connection open until
// the client gives up, as a server that hangs does.
func (s *Server) Hang(n int, method, path string) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.hang = hang{n: n, method: method, path: path}
}

// Hung is how many calls Hang has held so far.
func (s *Server) Hung() int {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return s.ext.hang.hung
}

// takeHang says whether to hang this call.
func (s *Server) takeHang(r *http.Request) bool {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	h := &s.ext.hang
	if h.n <= 0 || r.Method != h.method || !strings.HasPrefix(r.URL.Path, h.path) {
		return false
	}
	h.n--
	h.hung++
	return true
}

// StallDownloads is CutDownloads with a stall at the cut instead of a
// drop: the connection stays open and sends nothing more until the client
// gives up.
func (s *Server) StallDownloads(n int, frac float64) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.cut = downloadCut{n: n, frac: frac, stall: true}
}

// CutDownloads cuts the next n downloads of a file's content (GET
// /v1/files/{id}/content): each sends its full length in Content-Length,
// then the share frac of the file, cut at a line's end, and drops the
// connection, as a download broken off by the network does.
func (s *Server) CutDownloads(n int, frac float64) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.cut = downloadCut{n: n, frac: frac}
}

// takeCut says where to cut the next download of data, if it is cut,
// and whether to stall there.
func (s *Server) takeCut(data []byte) (at int, stall, ok bool) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	if s.ext.cut.n <= 0 {
		return 0, false, false
	}
	s.ext.cut.n--
	s.ext.cut.done++
	at = int(float64(len(data)) * s.ext.cut.frac)
	for at > 0 && data[at-1] != '\n' {
		at--
	}
	return at, s.ext.cut.stall, true
}

// writeCut sends the head of body under the length of all of it, and
// drops the connection, or with stall holds it until the client leaves.
func (x *exchange) writeCut(all int, head []byte, stall bool) {
	x.w.Header().Set("Content-Length", strconv.Itoa(all))
	x.status = http.StatusOK
	x.settle()
	x.w.WriteHeader(http.StatusOK)
	x.w.Write(head) //nolint:errcheck // the connection is dropped next
	if f, ok := x.w.(http.Flusher); ok {
		f.Flush()
	}
	if stall {
		<-x.r.Context().Done()
	}
	panic(http.ErrAbortHandler)
}

// hung holds a call until its client gives up, without an answer.
func (x *exchange) hung() {
	x.settle()
	// The server notices the client leave only once it has read the
	// request's body.
	io.Copy(io.Discard, x.r.Body) //nolint:errcheck // only draining
	<-x.r.Context().Done()
	panic(http.ErrAbortHandler)
}
