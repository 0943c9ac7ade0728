package openaitest

import (
	"net/http"
	"strconv"
)

// downloadCut is a fault of file downloads: see CutDownloads.
type downloadCut struct {
	n    int     // downloads left to cut
	frac float64 // the share of the file sent before the cut
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

// takeCut says where to cut the next download of data, if it is cut.
func (s *Server) takeCut(data []byte) (int, bool) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	if s.ext.cut.n <= 0 {
		return 0, false
	}
	s.ext.cut.n--
	at := int(float64(len(data)) * s.ext.cut.frac)
	for at > 0 && data[at-1] != '\n' {
		at--
	}
	return at, true
}

// writeCut sends the head of body under the length of all of it, and
// drops the connection.
func (x *exchange) writeCut(all int, head []byte) {
	x.w.Header().Set("Content-Length", strconv.Itoa(all))
	x.status = http.StatusOK
	x.settle()
	x.w.WriteHeader(http.StatusOK)
	x.w.Write(head) //nolint:errcheck // the connection is dropped next
	if f, ok := x.w.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler)
}
