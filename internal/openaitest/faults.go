package openaitest

// faults are the switches a test turns while the server runs, to make the
// Files and Batch APIs misbehave as the real ones sometimes do.
type faults struct {
	queueTokens    int  // the enqueued-token limit, once set (see SetQueueTokens)
	queueTokensSet bool // queueTokens replaces BatchConfig.QueueTokens
	holdCreates    int  // creations left to hold (see HoldCreates)
	repeatAnswers  bool // see RepeatAnswers
	answerAndFail  bool // see AnswerAndFail
	failLists      int  // listings of batches left to fail (see FailLists)
}

// SetQueueTokens sets the enqueued-token limit of each model from now on,
// in place of BatchConfig.QueueTokens (0: no limit): the organisation's
// other batches ended, say, and the limit has room again.
func (s *Server) SetQueueTokens(n int) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.queueTokens, s.ext.faults.queueTokensSet = n, true
}

// queueTokens is the enqueued-token limit now. It requires s.ext.mu held.
func (s *Server) queueTokens() int {
	if s.ext.faults.queueTokensSet {
		return s.ext.faults.queueTokens
	}
	return s.cfg.Batch.QueueTokens
}

// HoldCreates makes the next n batch creations make their batch, then
// hold the answer until the client leaves: a client killed while its
// create is in flight has made a batch it never heard of.
func (s *Server) HoldCreates(n int) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.holdCreates = n
}

// takeHoldCreate says whether to hold the answer to this creation. It
// requires s.ext.mu held.
func (s *Server) takeHoldCreate() bool {
	if s.ext.faults.holdCreates <= 0 {
		return false
	}
	s.ext.faults.holdCreates--
	return true
}

// RepeatAnswers makes every line a batch answers 200 from now on appear
// twice in its output file, as the same answer under another request id:
// an output file that repeats a custom_id. BatchStats counts each once.
func (s *Server) RepeatAnswers(on bool) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.repeatAnswers = on
}

// AnswerAndFail makes every line a batch answers 200 from now on also
// appear in its error file with a 500: one custom_id given both an answer
// and a failure. BatchStats counts only the answer.
func (s *Server) AnswerAndFail(on bool) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.answerAndFail = on
}

// outputFaults are RepeatAnswers and AnswerAndFail now.
func (s *Server) outputFaults() (repeat, fail bool) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	return s.ext.faults.repeatAnswers, s.ext.faults.answerAndFail
}

// FailLists makes the next n listings of batches (GET /v1/batches) answer
// 500, as the API sometimes does.
func (s *Server) FailLists(n int) {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	s.ext.faults.failLists = n
}

// takeFailList says whether to fail this listing.
func (s *Server) takeFailList() bool {
	s.ext.mu.Lock()
	defer s.ext.mu.Unlock()
	if s.ext.faults.failLists <= 0 {
		return false
	}
	s.ext.faults.failLists--
	return true
}
