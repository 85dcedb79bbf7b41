"""A reward plug-in for tests: a random-init model never writes a passing program, so the
end-to-end test rewards reply length instead, which varies between samples and gives the
learner a real, non-zero advantage to follow."""


def reply_length(turns, task, config):
    return [min(len(t.text), 200) / 200 for t in turns]
