package openaitest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBatchBytes is the largest batch input file the API takes.
const DefaultMaxBatchBytes = 200 << 20

// file is an uploaded or generated file.
type file struct {
	id, name, purpose string
	created           time.Time
	data              []byte
}

// fileObject is the API's file object.
type fileObject struct {
	Object        string  `json:"object"`
	ID            string  `json:"id"`
	Purpose       string  `json:"purpose"`
	Filename      string  `json:"filename"`
	Bytes         int     `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

func (f *file) object() fileObject {
	return fileObject{
		Object: "file", ID: f.id, Purpose: f.purpose, Filename: f.name,
		Bytes: len(f.data), CreatedAt: f.created.Unix(), Status: "processed",
	}
}

var purposes = map[string]bool{
	"assistants": true, "batch": true, "fine-tune": true, "vision": true,
	"user_data": true, "evals": true,
}

// addFile stores a new file and returns it.
func (s *Server) addFile(name, purpose string, data []byte) *file {
	f := &file{id: s.randomID("file-", 22), name: name, purpose: purpose, created: s.cfg.Now(), data: data}
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	if s.ext.files == nil {
		s.ext.files = map[string]*file{}
	}
	s.ext.files[f.id] = f
	s.ext.fileOrder = append(s.ext.fileOrder, f.id)
	return f
}

// getFile returns the file id, or nil.
func (s *Server) getFile(id string) *file {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return s.ext.files[id]
}

// File returns the content of the file id and whether it exists: an
// uploaded input file, or a batch's output or error file.
func (s *Server) File(id string) ([]byte, bool) {
	f := s.getFile(id)
	if f == nil {
		return nil, false
	}
	return f.data, true
}

// FileIDs returns the ids of the files held with purpose ("batch" for
// uploaded batch input files, "batch_output" for batches' output and error
// files, "" for every file), oldest first.
func (s *Server) FileIDs(purpose string) []string {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	var ids []string
	for _, id := range s.ext.fileOrder {
		if f := s.ext.files[id]; f != nil && (purpose == "" || f.purpose == purpose) {
			ids = append(ids, id)
		}
	}
	return ids
}

// serveFiles answers the Files API: POST /v1/files, GET /v1/files,
// GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}.
func (x *exchange) serveFiles() bool {
	r := x.r
	rest, _ := strings.CutPrefix(r.URL.Path, "/v1/files")
	rest = strings.TrimPrefix(rest, "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case id == "" && r.Method == http.MethodPost:
		x.upload()
	case id == "" && r.Method == http.MethodGet:
		x.listFiles()
	case id != "" && sub == "" && r.Method == http.MethodGet:
		if f := x.s.getFile(id); f != nil {
			x.writeJSON(f.object())
		} else {
			x.notFound("File", id)
		}
	case id != "" && sub == "content" && r.Method == http.MethodGet:
		f := x.s.getFile(id)
		if f == nil {
			x.notFound("File", id)
			return true
		}
		x.w.Header().Set("Content-Type", "application/octet-stream")
		x.w.Header().Set("Content-Disposition", `attachment; filename="`+f.name+`"`)
		x.outcome = succeeded
		if at, stall, ok := x.s.takeCut(f.data); ok {
			x.writeCut(len(f.data), f.data[:at], stall)
		}
		x.write(http.StatusOK, f.data)
	case id != "" && sub == "" && r.Method == http.MethodDelete:
		s := x.s
		s.ext.mu.Lock()
		_, ok := s.ext.files[id]
		if ok {
			delete(s.ext.files, id)
			s.ext.batchStats.FilesDeleted++
		}
		s.ext.mu.Unlock()
		if !ok {
			x.notFound("File", id)
			return true
		}
		x.writeJSON(struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Deleted bool   `json:"deleted"`
		}{id, "file", true})
	default:
		x.invalidURL()
	}
	return true
}

// upload answers POST /v1/files: a multipart form with "purpose" and
// "file". A batch input file must be named *.jsonl and be at most
// BatchConfig.MaxBytes; its lines are checked when a batch validates it,
// as the API does.
func (x *exchange) upload() {
	s := x.s
	limit := s.cfg.Batch.maxBytes()
	bad := func(msg, param, code string) {
		x.fail(http.StatusBadRequest, badRequest, *invalid(msg, param, code))
	}
	mt, params, err := mime.ParseMediaType(x.r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		bad("Invalid Content-Type header ("+x.r.Header.Get("Content-Type")+"), expected multipart/form-data. (HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')", "", "")
		return
	}
	mr := multipart.NewReader(x.r.Body, params["boundary"])
	var purpose, name string
	var data []byte
	var haveFile bool
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			bad("The multipart form of your request could not be parsed: "+err.Error(), "", "")
			return
		}
		switch p.FormName() {
		case "purpose":
			b, _ := io.ReadAll(io.LimitReader(p, 1<<10))
			purpose = string(b)
		case "file":
			// Read one byte past the limit to know the file is too large
			// without holding more of it.
			var buf bytes.Buffer
			if _, err := io.Copy(&buf, io.LimitReader(p, limit+1)); err != nil {
				x.status = 0 // the client went away
				return
			}
			data, name, haveFile = buf.Bytes(), p.FileName(), true
			if int64(len(data)) > limit {
				// Drain the rest, so the client reads our answer.
				io.Copy(io.Discard, x.r.Body) //nolint:errcheck // only draining
				bad(fmt.Sprintf("File is too large: the maximum size of a batch input file is %d bytes.", limit), "file", "file_too_large")
				return
			}
		}
		p.Close()
	}
	switch {
	case purpose == "":
		bad("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
	case !purposes[purpose]:
		bad(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'assistants', 'batch', 'fine-tune', 'vision', 'user_data', and 'evals'.", purpose), "purpose", "invalid_value")
	case !haveFile:
		bad("Missing required parameter: 'file'.", "file", "missing_required_parameter")
	case purpose == "batch" && !strings.HasSuffix(name, ".jsonl"):
		bad("Invalid file format for Batch API. Must be .jsonl", "", "")
	default:
		f := s.addFile(name, purpose, data)
		s.ext.mu.Lock()
		s.ext.batchStats.Uploads++
		lose := s.ext.uploadsLost < s.cfg.Batch.LoseUploads
		if lose {
			s.ext.uploadsLost++
		}
		s.ext.mu.Unlock()
		if lose {
			x.outcome = injected
			x.drop()
			return
		}
		x.writeJSON(f.object())
	}
}

// listFiles answers GET /v1/files as the API does: newest first unless
// order is asc, only the files of purpose if it is given, at most limit
// (default and most 10,000) after the file id after.
func (x *exchange) listFiles() {
	s := x.s
	q := x.r.URL.Query()
	limit := atoiOr(q.Get("limit"), 10_000)
	if limit < 1 || limit > 10_000 {
		x.fail(http.StatusBadRequest, badRequest, *invalid(fmt.Sprintf("Invalid 'limit': expected a value between 1 and 10000, but got %s instead.", q.Get("limit")), "limit", "invalid_value"))
		return
	}
	order := q.Get("order")
	if order != "" && order != "asc" && order != "desc" {
		x.fail(http.StatusBadRequest, badRequest, *invalid(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'asc' and 'desc'.", order), "order", "invalid_value"))
		return
	}
	purpose, after := q.Get("purpose"), q.Get("after")
	s.ext.mu.Lock()
	ids := slices.Clone(s.ext.fileOrder)
	if order != "asc" {
		slices.Reverse(ids)
	}
	data := []fileObject{}
	started := after == ""
	more := false
	for _, id := range ids {
		f := s.ext.files[id]
		if !started {
			// A deleted file still marks the place: its id is in the order.
			started = id == after
			continue
		}
		if f == nil || purpose != "" && f.purpose != purpose {
			continue
		}
		if len(data) == limit {
			more = true
			break
		}
		data = append(data, f.object())
	}
	s.ext.mu.Unlock()
	list := listObject[fileObject]{Object: "list", Data: data, HasMore: more}
	if n := len(data); n > 0 {
		list.FirstID, list.LastID = &data[0].ID, &data[n-1].ID
	}
	x.writeJSON(list)
}

// listObject is the API's list envelope.
type listObject[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// atoiOr is s as a number, or def if it is not one.
func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}
