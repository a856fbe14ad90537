"""Lays a Document out as an A4 PDF, in a Unicode font that covers Chinese.

The font is Noto Sans SC (SIL Open Font License), shipped by the pylopdf-fonts-zh-cn
package the project depends on; fpdf2 embeds the subset of glyphs a document uses. It has
one weight, so headings are set larger instead of bold.
"""

from __future__ import annotations

from fpdf import FPDF
from pylopdf_fonts_zh_cn import sans_path

from services.billing.document import Document, DocumentLine

FONT = "notosanssc"
_ROW = 4.2


class _Pdf(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self._footer_text = footer_text
        self.add_font(FONT, "", sans_path())

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=7)
        self.cell(0, 5, f"{self._footer_text} - page {self.page_no()}/{{nb}}", align="C")


def render(document: Document) -> bytes:
    pdf = _Pdf(f"{document.reference} - {document.issuer}")
    pdf.set_title(document.reference)
    pdf.set_author(document.issuer)
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    _heading(pdf, document)
    _parties(pdf, document)
    _lines(pdf, document)
    _totals(pdf, document)
    _sections(pdf, document)
    return bytes(pdf.output())


def _heading(pdf: FPDF, document: Document) -> None:
    pdf.set_font(FONT, size=16)
    pdf.cell(pdf.epw, 9, document.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, size=9)
    for label, value in document.facts:
        pdf.cell(38, 5, label + ":")
        pdf.multi_cell(pdf.epw - 38, 5, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _parties(pdf: FPDF, document: Document) -> None:
    top = pdf.get_y()
    width = pdf.epw / max(1, len(document.parties))
    bottom = top
    for column, party in enumerate(document.parties):
        pdf.set_xy(pdf.l_margin + column * width, top)
        pdf.set_font(FONT, size=10.5)
        pdf.cell(width, 5.5, party.heading, new_x="LEFT", new_y="NEXT")
        pdf.set_font(FONT, size=9)
        pdf.multi_cell(width - 4, 4.5, "\n".join(party.lines), new_x="LEFT", new_y="NEXT")
        bottom = max(bottom, pdf.get_y())
    pdf.set_xy(pdf.l_margin, bottom)
    pdf.ln(3)


def _widths(pdf: FPDF) -> tuple[float, float, float]:
    return (pdf.epw - 62, 20, 42)


def _header_row(pdf: FPDF, document: Document) -> None:
    pdf.set_font(FONT, size=9)
    pdf.set_fill_color(225, 230, 240)
    for width, heading, align in zip(_widths(pdf), document.columns, "LRR", strict=True):
        pdf.cell(width, 6, heading, border=1, align=align, fill=True)
    pdf.ln()


def _lines(pdf: FPDF, document: Document) -> None:
    _header_row(pdf, document)
    for line in document.lines:
        _line(pdf, document, line)
    pdf.ln(3)


def _line(pdf: FPDF, document: Document, line: DocumentLine) -> None:
    widths = _widths(pdf)
    pdf.set_font(FONT, size=8.5)
    body = "\n".join(line.text)
    height = pdf.multi_cell(widths[0], _ROW, body, dry_run=True, output="HEIGHT")
    assert isinstance(height, float)
    if pdf.get_y() + height > pdf.page_break_trigger:
        # A line never splits across pages; the next page repeats the column headings.
        pdf.add_page()
        _header_row(pdf, document)
        pdf.set_font(FONT, size=8.5)
    start_y = pdf.get_y()
    pdf.multi_cell(widths[0], _ROW, body, border="LB", new_x="RIGHT", new_y="TOP")
    pdf.cell(widths[1], height, line.quantity, border="B", align="R")
    pdf.cell(widths[2], height, line.amount, border="RB", align="R")
    pdf.set_xy(pdf.l_margin, start_y + height)


def _totals(pdf: FPDF, document: Document) -> None:
    widths = _widths(pdf)
    for label, amount, emphasised in document.totals:
        pdf.set_font(FONT, size=11.5 if emphasised else 10)
        pdf.cell(widths[0] + widths[1], 6, label, align="R")
        pdf.cell(widths[2], 6, amount, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)


def _sections(pdf: FPDF, document: Document) -> None:
    for section in document.sections:
        pdf.set_font(FONT, size=10)
        pdf.cell(pdf.epw, 5.5, section.heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, size=8.5)
        pdf.multi_cell(pdf.epw, 4.3, "\n".join(section.lines), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    if document.fine_print:
        pdf.set_font(FONT, size=7.5)
        pdf.multi_cell(pdf.epw, 3.8, document.fine_print, new_x="LMARGIN", new_y="NEXT")
