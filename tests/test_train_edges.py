"""train_ch6's edge cases: notebook detection, resume, fp16 divergence, input checks, atomic writes;
and layer_summary/block_shapes leaving the caller's network alone."""


from d2l_local import train as train_mod

# ---------------------------------------------------------------- live plot in notebooks


def test_in_notebook_recognises_subclasses_of_the_jupyter_shell(monkeypatch):
    import IPython
    from ipykernel.zmqshell import ZMQInteractiveShell
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    class Shell(ZMQInteractiveShell):  # as google.colab._shell.Shell
        pass

    for shell, expected in ((Shell.__new__(Shell), True), (ZMQInteractiveShell.__new__(ZMQInteractiveShell), True),
                            (TerminalInteractiveShell.__new__(TerminalInteractiveShell), False), (None, False)):
        monkeypatch.setattr(IPython, "get_ipython", lambda shell=shell: shell)
        assert train_mod._in_notebook() is expected, type(shell).__name__
