from compressor.utils.tables import markdown_table, print_table, text_table


def test_markdown_table_escapes_pipes():
    table = markdown_table(["a", "b"], [["1", "x|y"], ["2", "z"]])
    assert table == "| a | b |\n| --- | --- |\n| 1 | x/y |\n| 2 | z |\n"


def test_text_table_aligns_columns_without_trailing_spaces():
    table = text_table(["layer", "sparsity"], [["conv1", "50%"], ["fc", ""]])
    assert table.splitlines() == ["layer  sparsity", "conv1  50%", "fc"]
    assert text_table(None, []) == ""


def test_print_table_prints_every_cell(capsys):
    print_table(["metric", "dense", "int8"], [["accuracy", "0.91", "0.90"]], title="T",
                right=[1, 2])
    out = capsys.readouterr().out
    assert all(word in out for word in ("T", "metric", "accuracy", "0.91", "0.90"))
    print_table(None, [["label", "value"]])
    assert "value" in capsys.readouterr().out
