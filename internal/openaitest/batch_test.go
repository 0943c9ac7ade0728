package openaitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// chatLines is n chat batch lines q1..qn asking "prompt i".
func chatLines(model string, n int) openai.UploadBatchFileRequest {
	var req openai.UploadBatchFileRequest
	for i := 1; i <= n; i++ {
		req.AddChatCompletion(fmt.Sprint("q", i), openai.ChatCompletionRequest{
			Model:    model,
			Messages: []openai.ChatCompletionMessage{{Role: "user", Content: fmt.Sprint("prompt ", i)}},
		})
	}
	return req
}

// submit uploads req and creates a batch of it at endpoint.
func submit(t *testing.T, c *openai.Client, endpoint openai.BatchEndpoint, req openai.UploadBatchFileRequest) openai.BatchResponse {
	t.Helper()
	ctx := context.Background()
	f, err := c.UploadBatchFile(ctx, req)
	if err != nil {
		t.Fatalf("UploadBatchFile: %v", err)
	}
	b, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: endpoint})
	if err != nil {
		t.Fatalf("CreateBatch: %v", err)
	}
	return b
}

func retrieve(t *testing.T, c *openai.Client, id string) openai.BatchResponse {
	t.Helper()
	b, err := c.RetrieveBatch(context.Background(), id)
	if err != nil {
		t.Fatalf("RetrieveBatch(%s): %v", id, err)
	}
	return b
}

// batchLine is one line of an output or error file.
type batchLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// content reads the file id ("" for none) as batch lines.
func content(t *testing.T, c *openai.Client, id *string) []batchLine {
	t.Helper()
	if id == nil {
		return nil
	}
	raw, err := c.GetFileContent(context.Background(), *id)
	if err != nil {
		t.Fatalf("GetFileContent(%s): %v", *id, err)
	}
	defer raw.Close()
	var lines []batchLine
	sc := bufio.NewScanner(raw)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var l batchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("file %s: line %q: %v", *id, sc.Bytes(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

func TestBatchLifecycle(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Seed: 7})
	c := client(s, "k")
	req := chatLines("gpt-4o-mini", 20)
	b := submit(t, c, openai.BatchEndpointChatCompletions, req)
	if b.Status != "validating" || !strings.HasPrefix(b.ID, "batch_") || b.CompletionWindow != "24h" || b.ExpiresAt == nil || *b.ExpiresAt-b.CreatedAt != 86400 {
		t.Fatalf("CreateBatch = %+v, want validating, batch_..., 24h, expiring in 86400 s", b.Batch)
	}
	var statuses []string
	for range 3 {
		b = retrieve(t, c, b.ID)
		statuses = append(statuses, b.Status)
	}
	if want := []string{"in_progress", "finalizing", "completed"}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses = %v, want %v", statuses, want)
	}
	if rc := b.RequestCounts; rc.Total != 20 || rc.Completed != 20 || rc.Failed != 0 {
		t.Errorf("request_counts = %+v, want 20 20 0", rc)
	}
	if b.OutputFileID == nil || b.ErrorFileID != nil || b.InProgressAt == nil || b.FinalizingAt == nil || b.CompletedAt == nil {
		t.Errorf("completed batch = %+v, want an output file, no error file, every time set", b.Batch)
	}
	out := content(t, c, b.OutputFileID)
	var ids []string
	for _, l := range out {
		ids = append(ids, l.CustomID)
		var body struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(l.Response.Body, &body); err != nil {
			t.Fatalf("line %s body: %v", l.CustomID, err)
		}
		want := "answer: prompt " + strings.TrimPrefix(l.CustomID, "q")
		if l.Response.StatusCode != 200 || !strings.HasPrefix(l.ID, "batch_req_") || l.Error != nil || body.Object != "chat.completion" || body.Choices[0].Message.Content != want {
			t.Errorf("line %s = %d %s %q, want 200 batch_req_... chat.completion %q", l.CustomID, l.Response.StatusCode, l.ID, body.Choices[0].Message.Content, want)
		}
	}
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b string) int { return len(a) - len(b) + strings.Compare(a, b)*boolInt(len(a) == len(b)) })
	var inOrder []string
	for i := 1; i <= 20; i++ {
		inOrder = append(inOrder, fmt.Sprint("q", i))
	}
	if !slices.Equal(sorted, inOrder) {
		t.Errorf("output custom_ids = %v, want each of q1..q20 once", ids)
	}
	if slices.Equal(ids, inOrder) {
		t.Errorf("output custom_ids in input order; want the fake's own order")
	}

	if got := s.Endpoint(PathChat).Requests; got != 0 {
		t.Errorf("Endpoint(chat).Requests = %d, want 0: batch lines are not synchronous requests", got)
	}
	st := s.BatchStats()
	if st.Created != 1 || st.Polls != 3 || st.Lines != 20 || st.LinesByEndpoint[PathChat] != 20 || st.Succeeded != 20 || st.PromptTokens == 0 {
		t.Errorf("BatchStats = %+v, want 1 created, 3 polls, 20 chat lines succeeded with tokens", st)
	}
	if polls := s.BatchPolls(b.ID); len(polls) != 3 {
		t.Errorf("BatchPolls = %v, want 3", polls)
	}
	// A completed batch stays completed.
	if got := retrieve(t, c, b.ID).Status; got != "completed" {
		t.Errorf("status after completion = %q", got)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestBatchSameBodiesAsSync(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	ctx := context.Background()
	var req openai.UploadBatchFileRequest
	req.AddEmbedding("e1", openai.EmbeddingRequest{Model: openai.SmallEmbedding3, Input: []string{"hello world", "foo"}})
	b := submit(t, c, openai.BatchEndpointEmbeddings, req)
	s.FinishBatches()
	b = retrieve(t, c, b.ID)
	out := content(t, c, b.OutputFileID)
	if len(out) != 1 {
		t.Fatalf("embeddings batch output = %d lines, want 1", len(out))
	}
	var got openai.EmbeddingResponse
	if err := json.Unmarshal(out[0].Response.Body, &got); err != nil {
		t.Fatal(err)
	}
	want, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequest{Model: openai.SmallEmbedding3, Input: []string{"hello world", "foo"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Usage != want.Usage || !slices.Equal(got.Data[1].Embedding, want.Data[1].Embedding) {
		t.Errorf("batch embeddings = usage %+v, want as sync: %+v and the same vectors", got.Usage, want.Usage)
	}

	// Responses lines, through raw JSONL.
	jsonl := `{"custom_id":"r1","method":"POST","url":"/v1/responses","body":{"model":"gpt-4o-mini","instructions":"Be brief.","input":"Hello world","store":false}}` + "\n"
	f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: []byte(jsonl), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointResponses, Metadata: map[string]any{"run": "r-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Metadata["run"] != "r-1" {
		t.Errorf("metadata = %v, want run r-1", rb.Metadata)
	}
	s.FinishBatches()
	rb = retrieve(t, c, rb.ID)
	line := content(t, c, rb.OutputFileID)[0]
	var resp responseBody
	if err := json.Unmarshal(line.Response.Body, &resp); err != nil {
		t.Fatal(err)
	}
	sync := postResponse(t, s, `{"model":"gpt-4o-mini","instructions":"Be brief.","input":"Hello world","store":false}`)
	if resp.Object != "response" || resp.text() != sync.text() || resp.Usage != sync.Usage {
		t.Errorf("batch response = %s %q %+v, want as sync: response %q %+v", resp.Object, resp.text(), resp.Usage, sync.text(), sync.Usage)
	}
	st := s.BatchStats()
	if st.LinesByEndpoint[PathEmbeddings] != 1 || st.LinesByEndpoint[PathResponses] != 1 {
		t.Errorf("LinesByEndpoint = %v, want 1 embeddings, 1 responses", st.LinesByEndpoint)
	}
	if e := s.Endpoint(PathResponses); e.Requests != 1 || e.StoreFalse != 1 {
		t.Errorf("Endpoint(responses) = %+v, want only the 1 sync request counted", e)
	}
}

func TestBatchLineFailures(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	req := chatLines("gpt-4o-mini", 5)
	req.AddChatCompletion("boom", openai.ChatCompletionRequest{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "x __status_500__"}}})
	req.AddChatCompletion("bad", openai.ChatCompletionRequest{Model: "gpt-4o-mini", Temperature: 3, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "x"}}})
	b := submit(t, c, openai.BatchEndpointChatCompletions, req)
	s.FinishBatches()
	b = retrieve(t, c, b.ID)
	if rc := b.RequestCounts; b.Status != "completed" || rc.Total != 7 || rc.Completed != 5 || rc.Failed != 2 {
		t.Fatalf("batch = %s %+v, want completed 7 5 2", b.Status, rc)
	}
	errs := content(t, c, b.ErrorFileID)
	status := map[string]int{}
	for _, l := range errs {
		status[l.CustomID] = l.Response.StatusCode
		var e errorBody
		if err := json.Unmarshal(l.Response.Body, &e); err != nil || e.Error.Message == "" || l.Error != nil {
			t.Errorf("error line %s body = %s, want the API's error body and error null", l.CustomID, l.Response.Body)
		}
	}
	if status["boom"] != 500 || status["bad"] != 400 || len(errs) != 2 {
		t.Errorf("error file statuses = %v, want boom 500, bad 400", status)
	}
	if got := len(content(t, c, b.OutputFileID)); got != 5 {
		t.Errorf("output lines = %d, want 5", got)
	}

	rate := newServer(t, Config{Seed: 3, Batch: BatchConfig{LineFailRate: 0.5}})
	rc := client(rate, "k")
	b = submit(t, rc, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 100))
	rate.FinishBatches()
	b = retrieve(t, rc, b.ID)
	if f := b.RequestCounts.Failed; f < 25 || f > 75 || b.RequestCounts.Completed+f != 100 {
		t.Errorf("LineFailRate 0.5: %+v, want about half of 100 failed", b.RequestCounts)
	}
}

func TestBatchValidation(t *testing.T) {
	t.Parallel()
	line := func(id, url, model string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[{"role":"user","content":"x"}]}}`, id, url, model)
	}
	chat := "/v1/chat/completions"
	tests := []struct {
		name  string
		jsonl string
		code  string
		line  int
	}{
		{"duplicate custom_id", line("a", chat, "m") + "\n" + line("a", chat, "m"), "duplicate_custom_id", 2},
		{"two models", line("a", chat, "m") + "\n" + line("b", chat, "m") + "\n" + line("c", chat, "other"), "mismatched_model", 3},
		{"wrong url", line("a", "/v1/embeddings", "m"), "invalid_url", 1},
		{"not json", line("a", chat, "m") + "\n{oops", "invalid_json_line", 2},
		{"no custom_id", `{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, "missing_required_parameter", 1},
		{"GET", `{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}`, "invalid_value", 1},
		{"empty", "\n", "empty_file", 0},
		{"too many lines", line("a", chat, "m") + "\n" + line("b", chat, "m") + "\n" + line("c", chat, "m"), "too_many_requests", 0},
	}
	s := newServer(t, Config{Batch: BatchConfig{MaxLines: 2}})
	c := client(s, "k")
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: []byte(tt.jsonl), Purpose: openai.PurposeBatch})
			if err != nil {
				t.Fatalf("CreateFileBytes: %v", err)
			}
			b, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions})
			if err != nil {
				t.Fatalf("CreateBatch: %v", err)
			}
			b = retrieve(t, c, b.ID)
			if b.Status != "failed" || b.Errors == nil || len(b.Errors.Data) == 0 || b.FailedAt == nil || b.OutputFileID != nil {
				t.Fatalf("batch = %s %+v, want failed with errors", b.Status, b.Errors)
			}
			e := b.Errors.Data[0]
			line := 0
			if e.Line != nil {
				line = *e.Line
			}
			if e.Code != tt.code || line != tt.line || e.Message == "" {
				t.Errorf("errors.data[0] = %s line %d %q, want %s line %d", e.Code, line, e.Message, tt.code, tt.line)
			}
		})
	}
}

func TestBatchCreateErrors(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Batch: BatchConfig{MaxBytes: 100}})
	c := client(s, "k")
	ctx := context.Background()
	var apiErr *openai.APIError
	_, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: bytes.Repeat([]byte("x"), 101), Purpose: openai.PurposeBatch})
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || apiErr.Code != "file_too_large" {
		t.Errorf("upload of 101 bytes over MaxBytes 100 = %v, want 400 file_too_large", err)
	}
	_, err = c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.csv", Bytes: []byte("x"), Purpose: openai.PurposeBatch})
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || !strings.Contains(apiErr.Message, "Must be .jsonl") {
		t.Errorf("upload of in.csv = %v, want 400 Must be .jsonl", err)
	}
	f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: []byte("{}"), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		req   openai.CreateBatchRequest
		param string
	}{
		{openai.CreateBatchRequest{InputFileID: "file-nope", Endpoint: openai.BatchEndpointChatCompletions}, "input_file_id"},
		{openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: "/v1/images"}, "endpoint"},
		{openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions, CompletionWindow: "1h"}, "completion_window"},
	} {
		_, err := c.CreateBatch(ctx, tt.req)
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || apiErr.Param == nil || *apiErr.Param != tt.param {
			t.Errorf("CreateBatch(%+v) = %v, want 400 on %s", tt.req, err, tt.param)
		}
	}
	_, err = c.RetrieveBatch(ctx, "batch_nope")
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 || apiErr.Message != "No such Batch object: batch_nope" {
		t.Errorf("RetrieveBatch(batch_nope) = %v, want 404 No such Batch object", err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	ctx := context.Background()
	data := []byte(`{"custom_id":"a"}` + "\n")
	f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: data, Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Bytes != len(data) || f.Purpose != "batch" || f.FileName != "in.jsonl" || f.Status != "processed" {
		t.Errorf("CreateFileBytes = %+v, want file-..., file, %d bytes, batch, in.jsonl, processed", f, len(data))
	}
	got, err := c.GetFile(ctx, f.ID)
	if err != nil || got.ID != f.ID || got.Bytes != len(data) {
		t.Errorf("GetFile = %+v, %v, want %s", got, err, f.ID)
	}
	raw, err := c.GetFileContent(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(raw)
	raw.Close()
	if !bytes.Equal(b, data) {
		t.Errorf("GetFileContent = %q, want %q", b, data)
	}
	list, err := c.ListFiles(ctx)
	if err != nil || len(list.Files) != 1 {
		t.Errorf("ListFiles = %+v, %v, want 1 file", list, err)
	}
	if err := c.DeleteFile(ctx, f.ID); err != nil {
		t.Errorf("DeleteFile: %v", err)
	}
	if n, ids := s.BatchStats().FilesDeleted, s.FileIDs("batch"); n != 1 || len(ids) != 0 {
		t.Errorf("after DeleteFile: FilesDeleted = %d, FileIDs(batch) = %v, want 1 and none", n, ids)
	}
	var apiErr *openai.APIError
	if _, err := c.GetFile(ctx, f.ID); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 || apiErr.Message != "No such File object: "+f.ID {
		t.Errorf("GetFile after delete = %v, want 404 No such File object", err)
	}
	if rec := s.Requests(); rec[0].Path != "/v1/files" || rec[0].Method != "POST" || rec[0].Body != nil {
		t.Errorf("Requests()[0] = %s %s with %d bytes of body, want POST /v1/files without its body", rec[0].Method, rec[0].Path, len(rec[0].Body))
	}
	// A raw multipart upload without a purpose.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", s.URL()+"/files", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(msg), "Missing required parameter: 'purpose'.") {
		t.Errorf("upload without purpose = %d %s, want 400 missing purpose", resp.StatusCode, msg)
	}
}

func TestBatchExpires(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := newServer(t, Config{Now: clk.Now, Batch: BatchConfig{Advance: BatchManual, LinesPerStep: 2}})
	c := client(s, "k")
	b := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 5))
	for _, want := range []string{"in_progress", "in_progress"} {
		if got, _ := s.AdvanceBatch(b.ID); got != want {
			t.Fatalf("AdvanceBatch = %q, want %q", got, want)
		}
	}
	if got := retrieve(t, c, b.ID); got.Status != "in_progress" || got.RequestCounts.Completed != 2 {
		t.Fatalf("after one step of lines: %s %+v, want in_progress, 2 completed (polls do not advance in BatchManual)", got.Status, got.RequestCounts)
	}
	clk.Advance(24 * time.Hour)
	if got, _ := s.AdvanceBatch(b.ID); got != "expired" {
		t.Fatalf("AdvanceBatch after 24h = %q, want expired", got)
	}
	b = retrieve(t, c, b.ID)
	if b.ExpiredAt == nil || b.RequestCounts.Completed != 2 || b.RequestCounts.Failed != 3 {
		t.Errorf("expired batch = %+v, want expired_at, 2 completed, 3 failed", b.Batch)
	}
	if got := len(content(t, c, b.OutputFileID)); got != 2 {
		t.Errorf("expired batch output = %d lines, want the 2 answered", got)
	}
	errs := content(t, c, b.ErrorFileID)
	for _, l := range errs {
		if l.Response != nil || l.Error == nil || l.Error.Code != "batch_expired" {
			t.Errorf("error line %+v, want response null, error batch_expired", l)
		}
	}
	if len(errs) != 3 {
		t.Errorf("expired batch errors = %d lines, want 3", len(errs))
	}
}

func TestBatchCancel(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Batch: BatchConfig{LinesPerStep: 3}})
	c := client(s, "k")
	ctx := context.Background()
	b := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 10))
	retrieve(t, c, b.ID) // in_progress
	retrieve(t, c, b.ID) // 3 lines
	got, err := c.CancelBatch(ctx, b.ID)
	if err != nil || got.Status != "cancelling" || got.CancellingAt == nil {
		t.Fatalf("CancelBatch = %s, %v, want cancelling", got.Status, err)
	}
	b = retrieve(t, c, b.ID)
	if b.Status != "cancelled" || b.CancelledAt == nil || b.RequestCounts.Completed != 3 {
		t.Fatalf("after cancel = %s %+v, want cancelled with 3 completed", b.Status, b.RequestCounts)
	}
	if n := len(content(t, c, b.OutputFileID)); n != 3 {
		t.Errorf("cancelled output = %d lines, want 3", n)
	}
	var apiErr *openai.APIError
	if _, err := c.CancelBatch(ctx, b.ID); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 {
		t.Errorf("CancelBatch(cancelled) = %v, want 400", err)
	}
}

func TestBatchQueueTokens(t *testing.T) {
	t.Parallel()
	// Each line "prompt i" is 10 tokens of o200k_base by the chat
	// formula; 5 lines are 50.
	s := newServer(t, Config{Batch: BatchConfig{Advance: BatchManual, QueueTokens: 80}})
	c := client(s, "k")
	first := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 5))
	second := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 5))
	other := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4.1", 5))
	if got, _ := s.AdvanceBatch(first.ID); got != "in_progress" {
		t.Fatalf("first = %q, want in_progress", got)
	}
	if got, _ := s.AdvanceBatch(second.ID); got != "failed" {
		t.Fatalf("second = %q, want failed: 50 + 50 > 80", got)
	}
	b := retrieve(t, c, second.ID)
	e := b.Errors.Data[0]
	if e.Code != "token_limit_exceeded" || !strings.HasPrefix(e.Message, "Enqueued token limit reached for gpt-4o-mini in organization org-fake. Limit: 80 enqueued tokens.") {
		t.Errorf("errors = %s %q, want token_limit_exceeded", e.Code, e.Message)
	}
	if got, _ := s.AdvanceBatch(other.ID); got != "in_progress" {
		t.Errorf("another model's batch = %q, want in_progress: the limit is per model", got)
	}
	s.FinishBatches()
	third := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 5))
	if got, _ := s.AdvanceBatch(third.ID); got != "in_progress" {
		t.Errorf("after the first finished = %q, want in_progress", got)
	}
}

func TestBatchTimed(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := newServer(t, Config{Now: clk.Now, Batch: BatchConfig{
		Advance: BatchTimed, Validating: time.Second, LinesPerSecond: 2, Finalizing: time.Second,
	}})
	c := client(s, "k")
	b := submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 10))
	steps := []struct {
		after     time.Duration
		status    string
		completed int
	}{
		{500 * time.Millisecond, "validating", 0},
		{time.Second, "in_progress", 0},
		{2 * time.Second, "in_progress", 4},
		{3 * time.Second, "finalizing", 10},
		{time.Second, "completed", 10},
	}
	for _, st := range steps {
		clk.Advance(st.after)
		got := retrieve(t, c, b.ID)
		if got.Status != st.status || got.RequestCounts.Completed != st.completed {
			t.Errorf("after %v more: %s %d completed, want %s %d", st.after, got.Status, got.RequestCounts.Completed, st.status, st.completed)
		}
	}
	polls := s.BatchPolls(b.ID)
	if len(polls) != 5 || polls[4].Sub(polls[0]) != 7*time.Second {
		t.Errorf("BatchPolls = %v, want 5 polls over 7s", polls)
	}
}

func TestListBatches(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	ctx := context.Background()
	var ids []string
	for range 3 {
		ids = append(ids, submit(t, c, openai.BatchEndpointChatCompletions, chatLines("gpt-4o-mini", 1)).ID)
	}
	two := 2
	page, err := c.ListBatch(ctx, nil, &two)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != ids[2] || page.Data[1].ID != ids[1] || !page.HasMore || page.LastID != ids[1] || page.Object != "list" {
		t.Fatalf("ListBatch(limit 2) = %+v, want the 2 newest and has_more", page)
	}
	rest, err := c.ListBatch(ctx, &page.LastID, &two)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest.Data) != 1 || rest.Data[0].ID != ids[0] || rest.HasMore {
		t.Errorf("ListBatch(after %s) = %+v, want the oldest, no more", page.LastID, rest)
	}
	if got := s.BatchIDs(); !slices.Equal(got, ids) {
		t.Errorf("BatchIDs = %v, want %v", got, ids)
	}
}

func TestBatchAPIFaults(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Batch: BatchConfig{APIFailRate: 1}, Failures: []Failure{Fail503}})
	r := do(t, "GET", s.URL()+"/batches/batch_x", "", "")
	if r.status != 503 {
		t.Errorf("GET batch with APIFailRate 1 = %d, want 503", r.status)
	}
}

// TestBatchLoseCreates: a lost creation makes its batch, then closes the
// connection without an answer; the batch is in the list.
func TestBatchLoseCreates(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Batch: BatchConfig{LoseCreates: 1}})
	c := client(s, "k")
	ctx := context.Background()
	f, err := c.UploadBatchFile(ctx, chatLines("gpt-4o-mini", 1))
	if err != nil {
		t.Fatal(err)
	}
	req := openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions}
	if b, err := c.CreateBatch(ctx, req); err == nil {
		t.Fatalf("first CreateBatch = %s, want its answer lost", b.ID)
	}
	list, err := c.ListBatch(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 1 || list.Data[0].InputFileID != f.ID {
		t.Errorf("ListBatch after a lost create = %+v, want the batch it made", list.Data)
	}
	b, err := c.CreateBatch(ctx, req)
	if err != nil {
		t.Fatalf("second CreateBatch: %v, want an answer (LoseCreates 1)", err)
	}
	if ids := s.BatchIDs(); len(ids) != 2 || ids[1] != b.ID {
		t.Errorf("BatchIDs = %v, want the lost batch and %s", ids, b.ID)
	}
}

// BenchmarkBatchLines measures how fast the fake answers a batch of
// 10,000 chat lines: validation, answers and the output file.
func BenchmarkBatchLines(b *testing.B) {
	const n = 10_000
	s := New(Config{Batch: BatchConfig{Advance: BatchManual}})
	defer s.Close()
	c := client(s, "k")
	ctx := context.Background()
	f, err := c.UploadBatchFile(ctx, chatLines("gpt-4o-mini", n))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		bt, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions})
		if err != nil {
			b.Fatal(err)
		}
		for st := ""; st != "completed"; {
			st, _ = s.AdvanceBatch(bt.ID)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "lines/s")
}

// TestListFiles: GET /v1/files lists as the API does: newest first, or
// oldest with order=asc; by purpose; limit and after page through.
func TestListFiles(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{})
	c := client(s, "k")
	ctx := context.Background()
	var ids []string // a, b (fine-tune), c, d, oldest first
	for i, p := range []openai.PurposeType{openai.PurposeBatch, openai.PurposeFineTune, openai.PurposeBatch, openai.PurposeBatch} {
		f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: fmt.Sprintf("f%d.jsonl", i), Bytes: []byte("{}\n"), Purpose: p})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, f.ID)
	}
	a, b, cc, d := ids[0], ids[1], ids[2], ids[3]
	tests := []struct {
		query string
		want  []string
		more  bool
	}{
		{"", []string{d, cc, b, a}, false},
		{"?order=asc", []string{a, b, cc, d}, false},
		{"?purpose=batch", []string{d, cc, a}, false},
		{"?purpose=batch&limit=2", []string{d, cc}, true},
		{"?purpose=batch&limit=2&after=" + cc, []string{a}, false},
		{"?purpose=batch&after=" + b, []string{a}, false},
		{"?purpose=batch&order=asc&after=" + a, []string{cc, d}, false},
		{"?purpose=fine-tune", []string{b}, false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := do(t, "GET", s.URL()+"/files"+tt.query, "k", "")
			var list struct {
				Data []struct {
					ID string `json:"id"`
				} `json:"data"`
				HasMore bool `json:"has_more"`
			}
			if err := json.Unmarshal(r.body, &list); err != nil || r.status != 200 {
				t.Fatalf("GET /files%s = %d %s, want a list", tt.query, r.status, r.body)
			}
			var got []string
			for _, f := range list.Data {
				got = append(got, f.ID)
			}
			if !slices.Equal(got, tt.want) || list.HasMore != tt.more {
				t.Errorf("GET /files%s = %v, has_more %v, want %v, %v", tt.query, got, list.HasMore, tt.want, tt.more)
			}
		})
	}
	if r := do(t, "GET", s.URL()+"/files?limit=0", "k", ""); r.status != 400 {
		t.Errorf("GET /files?limit=0 = %d, want 400", r.status)
	}
}

// TestBatchLoseUploads: a lost upload stores its file, then closes the
// connection without an answer; the file is in the list.
func TestBatchLoseUploads(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{Batch: BatchConfig{LoseUploads: 1}})
	c := client(s, "k")
	ctx := context.Background()
	req := openai.FileBytesRequest{Name: "in.jsonl", Bytes: []byte("{}\n"), Purpose: openai.PurposeBatch}
	if f, err := c.CreateFileBytes(ctx, req); err == nil {
		t.Fatalf("first upload = %s, want its answer lost", f.ID)
	}
	lost := s.FileIDs("batch")
	if len(lost) != 1 {
		t.Fatalf("FileIDs(batch) after a lost upload = %v, want the file it stored", lost)
	}
	f, err := c.CreateFileBytes(ctx, req)
	if err != nil {
		t.Fatalf("second upload: %v, want an answer (LoseUploads 1)", err)
	}
	if ids := s.FileIDs("batch"); !slices.Equal(ids, []string{lost[0], f.ID}) {
		t.Errorf("FileIDs(batch) = %v, want %s and %s", ids, lost[0], f.ID)
	}
	if n := s.BatchStats().Uploads; n != 2 {
		t.Errorf("BatchStats().Uploads = %d, want 2", n)
	}
}
