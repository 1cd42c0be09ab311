// Tables on a narrow screen: app.css shows each row of a `.table-wrap.stacked` table as a
// card whose cells name their column. This script writes those names (data-label, from
// the column headers) and marks the table; it also keeps the table's roles, which some
// browsers drop when a table is not displayed as a table. Without it, a wide table
// scrolls inside its .table-wrap.
(function () {
  "use strict";
  function columnNames(table) {
    const head = table.tHead;
    const names = [];
    if (!head || !head.rows.length) { return names; }
    Array.prototype.forEach.call(head.rows[head.rows.length - 1].cells, function (cell) {
      for (let i = 0; i < cell.colSpan; i++) { names.push(cell.textContent.trim()); }
    });
    return names;
  }
  function labelRow(row, names) {
    row.setAttribute("role", "row");
    let column = 0;
    Array.prototype.forEach.call(row.cells, function (cell) {
      if (cell.tagName === "TH") {
        cell.setAttribute("role", cell.scope === "row" ? "rowheader" : "columnheader");
      } else {
        cell.setAttribute("role", "cell");
      }
      if (cell.colSpan === 1 && names[column] && !cell.dataset.label) {
        cell.dataset.label = names[column];
      }
      column += cell.colSpan;
    });
  }
  function stack(table) {
    const names = columnNames(table);
    const wrap = table.parentElement;
    if (!names.length || !wrap.classList.contains("table-wrap")) { return; }
    table.setAttribute("role", "table");
    [table.tHead].concat(Array.prototype.slice.call(table.tBodies), [table.tFoot])
      .forEach(function (group) {
        if (!group) { return; }
        group.setAttribute("role", "rowgroup");
        Array.prototype.forEach.call(group.rows, function (row) { labelRow(row, names); });
      });
    wrap.classList.add("stacked");
  }
  document.querySelectorAll(".table-wrap > table").forEach(stack);
})();
