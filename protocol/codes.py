"""Code sets: GB/T 39046-2020 附录A and the few this protocol adds.

On the wire a code is its value (a small integer or a short ASCII word); the
Chinese label lives here, for pages and documents. Where GB/T 39046 numbers a code
set, the numbers are the standard's (A.6 办件类型 1 即办件 / 2 承诺件 — note that
some vendors' systems use the reverse; map them at the boundary, never here).
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ACCEPTANCE_MODELS",
    "AUTHORITY_NATURES",
    "BUSINESS_ACTIONS",
    "CASE_TYPES",
    "COLLECTION_MODES",
    "DAY_UNITS",
    "DELIVERY_MODES",
    "ENTRY_STATUSES",
    "EVALUATION_CHANNELS",
    "EXERCISE_LEVELS",
    "FIELD_KINDS",
    "HANDLING_FORMS",
    "IDENTITY_METHODS",
    "ID_TYPES",
    "JOINT_FAILURES",
    "MATERIAL_FORMS",
    "MATERIAL_NECESSITY",
    "MATERIAL_SOURCES",
    "MATTER_TYPES",
    "OUTCOME_RESULTS",
    "RESULT_TYPES",
    "SATISFACTION",
    "SERVICE_OBJECTS",
    "SPECIAL_PROCEDURES",
    "TONGBAN_MODES",
    "TONGBAN_SCOPES",
    "TRUST_LEVELS",
    "AcceptanceModel",
    "ApplicantKind",
    "AuthorityNature",
    "BusinessAction",
    "CaseType",
    "CollectionMode",
    "DayUnit",
    "DeliveryMode",
    "EntryStatus",
    "EvaluationChannel",
    "ExerciseLevel",
    "FieldKind",
    "HandlingForm",
    "IdentityMethod",
    "JointFailure",
    "MaterialForm",
    "MaterialNecessity",
    "MaterialSource",
    "MatterType",
    "OutcomeResult",
    "ResultType",
    "Satisfaction",
    "SpecialProcedureType",
    "TongbanMode",
    "TongbanScope",
    "TrustLevel",
]

#: A.4 服务对象代码, used for the kind of applicant.
ApplicantKind = Literal[1, 2, 3, 4, 5, 6]
SERVICE_OBJECTS = {1: "自然人", 2: "企业法人", 3: "事业法人", 4: "社会组织法人", 5: "行政机关", 6: "其他组织"}

#: A.6 办件类型代码.
CaseType = Literal[1, 2, 9]
CASE_TYPES = {1: "即办件", 2: "承诺件", 9: "其他"}

#: A.7 特别程序种类代码.
SpecialProcedureType = Literal[1, 2]
SPECIAL_PROCEDURES = {1: "延长审批", 2: "除延长审批之外的情况"}

#: A.8 满意度代码.
Satisfaction = Literal[1, 2, 3, 4, 5]
SATISFACTION = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}

#: 表9 评价渠道.
EvaluationChannel = Literal["pc", "mobile", "qrcode", "hall_tablet", "hall_terminal", "phone", "sms"]
EVALUATION_CHANNELS = {
    "pc": "PC端",
    "mobile": "移动服务端",
    "qrcode": "二维码",
    "hall_tablet": "政务大厅平板电脑",
    "hall_terminal": "政务大厅其他终端",
    "phone": "电话",
    "sms": "短信",
}

#: 表7 业务动作.
BusinessAction = Literal["pass", "return", "other"]
BUSINESS_ACTIONS = {"pass": "通过", "return": "退回", "other": "其他"}

#: Material trust levels of 国办函〔2016〕108号: A 证照批文 (e-sealed), B verified by a
#: window, C uploaded by the applicant and still to be checked, D the applicant's own.
TrustLevel = Literal["A", "B", "C", "D"]
TRUST_LEVELS = {
    "A": "A级：政务服务实施机构产生的证照批文",
    "B": "B级：已经窗口人员核验的证照信息",
    "C": "C级：用户自行上传，需核验原件",
    "D": "D级：用户自制材料，承诺真实",
}

#: 表5 收取方式.
CollectionMode = Literal["paper_original", "paper_copy", "electronic", "shared"]
COLLECTION_MODES = {
    "paper_original": "纸质原件",
    "paper_copy": "纸质复印件",
    "electronic": "电子件",
    "shared": "数据共享免提交",
}

#: How the window checked the applicant's identity (身份核验).
IdentityMethod = Literal["id_card_reader", "face_match", "manual", "video", "e_id"]
IDENTITY_METHODS = {
    "id_card_reader": "身份证阅读器",
    "face_match": "人脸比对",
    "manual": "人工核对",
    "video": "远程视频核验",
    "e_id": "电子身份证",
}

#: GA/T 2000.156 证件类型 (the common ones; any three-digit code is accepted).
ID_TYPES = {
    "111": "居民身份证",
    "112": "临时居民身份证",
    "113": "户口簿",
    "414": "普通护照",
    "511": "台湾居民来往大陆通行证",
    "516": "港澳居民来往内地通行证",
    "553": "外国人永久居留身份证",
    "001": "统一社会信用代码",
}

#: Who decides 受理 (two models seen in practice, 包头"全市通办").
AcceptanceModel = Literal["handling_decides", "collecting_decides"]
ACCEPTANCE_MODELS = {
    "handling_decides": "异地收件、远程受理（办理地受理）",
    "collecting_decides": "异地受理、远程办理（收件地受理）",
}

#: 办结结果 (vendor systems' 办结结果代码, named).
OutcomeResult = Literal["issued", "approved", "returned", "void"]
OUTCOME_RESULTS = {
    "issued": "出证办结",
    "approved": "准予办结（无证照）",
    "returned": "退回办结（不予许可）",
    "void": "作废办结",
}

#: 送达方式.
DeliveryMode = Literal["window", "post", "electronic"]
DELIVERY_MODES = {"window": "窗口领取", "post": "邮寄送达", "electronic": "电子送达"}

# ---------------------------------------------------------------- the matter catalog (表4)

#: A.1 事项类型代码 (two digits; 11… and 21… are the standard's extension ranges).
MatterType = Literal["00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "20",
                     "21"]
MATTER_TYPES = {
    "00": "行政权力事项", "01": "行政许可", "02": "行政处罚", "03": "行政强制", "04": "行政征收",
    "05": "行政给付", "06": "行政检查", "07": "行政确认", "08": "行政奖励", "09": "行政裁决",
    "10": "其他类别事项", "11": "其他行政权力事项（扩展）", "20": "公共服务事项",
    "21": "其他公共服务事项（扩展）",
}

#: A.2 行使层级代码.
ExerciseLevel = Literal[1, 2, 3, 4, 5, 6, 7]
EXERCISE_LEVELS = {1: "国家级", 2: "省级", 3: "市级", 4: "县级", 5: "镇（乡、街道）级",
                   6: "村（社区）级", 7: "分级管理"}

#: A.3 实施主体性质代码.
AuthorityNature = Literal[1, 2, 3, 9]
AUTHORITY_NATURES = {1: "法定机关", 2: "授权组织", 3: "受委托组织", 9: "其他"}

#: A.5 办理形式代码 (also 表5 申报来源).
HandlingForm = Literal[1, 2, 3, 4, 9]
HANDLING_FORMS = {1: "窗口办理", 2: "电脑端网上办理", 3: "移动端网上申请", 4: "快递申请", 9: "其他"}

#: 表4 通办范围 (the standard names the four scopes but gives no digits: words on the wire).
TongbanScope = Literal["national", "inter_provincial", "inter_city", "inter_county"]
TONGBAN_SCOPES = {"national": "全国通办", "inter_provincial": "跨省通办",
                  "inter_city": "跨市通办", "inter_county": "跨县通办"}

#: The three modes of 国办发〔2020〕35号.
TongbanMode = Literal["online", "proxy", "joint"]
TONGBAN_MODES = {"online": "全程网办", "proxy": "异地代收代办", "joint": "多地联办"}

#: 时限单位: 工作日 or 自然日.
DayUnit = Literal["working", "natural"]
DAY_UNITS = {"working": "工作日", "natural": "自然日"}

#: 材料形式.
MaterialForm = Literal["paper", "electronic", "both"]
MATERIAL_FORMS = {"paper": "纸质", "electronic": "电子", "both": "纸质和电子"}

#: 材料必要性.
MaterialNecessity = Literal["required", "conditional", "optional"]
MATERIAL_NECESSITY = {"required": "必要", "conditional": "情形必要", "optional": "非必要"}

#: 材料来源渠道.
MaterialSource = Literal["applicant", "government", "intermediary", "other"]
MATERIAL_SOURCES = {"applicant": "申请人自备", "government": "政府部门核发",
                    "intermediary": "中介机构出具", "other": "其他"}

#: 审批结果类型.
ResultType = Literal["licence", "document", "other"]
RESULT_TYPES = {"licence": "证照", "document": "批文", "other": "其他"}

#: 事项状态 in the catalog: a withdrawn entry leaves search, old applications still resolve.
EntryStatus = Literal["active", "withdrawn"]
ENTRY_STATUSES = {"active": "在用", "withdrawn": "已撤销"}

#: 多地联办: what a refused or failed part does to the whole case.
JointFailure = Literal["whole_case", "part_only"]
JOINT_FAILURES = {"whole_case": "一地不予受理则整件不予受理", "part_only": "仅该地部分终止"}

#: Kinds of the fields an application form defines.
FieldKind = Literal["text", "long_text", "number", "date", "choice", "id_number", "phone",
                    "region", "yes_no"]
FIELD_KINDS = {"text": "文本", "long_text": "长文本", "number": "数字", "date": "日期",
               "choice": "选项", "id_number": "证件号码", "phone": "电话", "region": "行政区划",
               "yes_no": "是否"}

